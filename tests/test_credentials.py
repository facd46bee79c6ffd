"""Content credentials (io/credentials.py) in every MP4 and GIF, read by c2pa-python's own reader, and `svd check`."""

from __future__ import annotations

import datetime
import hashlib
import json

import c2pa
import pytest

from .conftest import EXAMPLES, read_video

FAST = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1"]
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def signed_recipe_digest(sidecar) -> str:
    """The recipe's SHA-256 as the credentials sign it: the sidecar less the output's own size and hash."""
    recipe = json.loads(sidecar.read_text())
    recipe["output"] = {k: v for k, v in recipe["output"].items() if k not in ("bytes", "sha256")}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def test_an_mp4_carries_credentials_c2pas_reader_validates_and_one_changed_byte_breaks(svd, tmp_path):
    video = tmp_path / "coffee.mp4"
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--out", video)
    assert r.code == 0, r.err
    assert read_video(video)[1].shape == (2, 64, 128, 3)  # still an H.264 MP4 a player decodes
    with c2pa.Reader(str(video)) as reader:
        assert reader.get_validation_state() == "Valid"  # signature and hashes good; svd's root is on no trust list
        manifest = reader.get_active_manifest()
    assert manifest["claim_generator_info"][0]["name"] == "svd"
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    (action,) = assertions["c2pa.actions.v2"]["actions"]
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", TRAINED)
    generation = assertions["svd.generation"]
    assert generation["input_sha256"] == hashlib.sha256((EXAMPLES / "coffee.png").read_bytes()).hexdigest()
    assert generation["recipe_sha256"] == signed_recipe_digest(tmp_path / "coffee.mp4.json")
    assert generation["model"] == {"name": "tiny"}
    assert [(i["title"], i["relationship"]) for i in manifest["ingredients"]] == [("coffee.png", "inputTo")]

    r = svd("check", video)
    assert r.code == 0, r.err
    assert "credentials: valid, unchanged since signed; signed by svd signer with this machine's svd certificate; " \
           "says: created from coffee.png with tiny; the recipe beside it is the one signed" in r.out  # fmt: skip
    assert "recipe: coffee.mp4.json records this file as svd wrote it (its size and SHA-256)" in r.out

    data = bytearray(video.read_bytes())
    data[data.find(b"mdat") + 100] ^= 0xFF  # one byte of the frames
    video.write_bytes(bytes(data))
    r = svd("check", video, "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert (
        report["credentials"]["state"] == "invalid"
        and "assertion.bmffHash.mismatch" in report["credentials"]["failures"]
    )
    assert report["file"] == "changed"  # the same size, one byte changed: the recipe's SHA-256 tells


def test_svd_check_exits_1_without_credentials_or_watermark_and_2_on_a_text_file(svd, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--size", "256x256", "--no-credentials", "--no-watermark",
            "--out", tmp_path / "bare.mp4")  # fmt: skip
    assert r.code == 0, r.err
    r = svd("check", tmp_path / "bare.mp4")
    assert r.code == 1 and "credentials: none" in r.out and "watermark: not found" in r.out
    # Without credentials (as a WebM always is), the recipe's size and SHA-256 still tell an edited file.
    assert "recipe: bare.mp4.json records this file as svd wrote it" in r.out
    data = bytearray((tmp_path / "bare.mp4").read_bytes())
    data[data.find(b"mdat") + 100] ^= 0xFF
    (tmp_path / "bare.mp4").write_bytes(bytes(data))
    r = svd("check", tmp_path / "bare.mp4")
    assert r.code == 1 and "recipe: bare.mp4.json records another size or SHA-256: the file changed since svd" in r.out
    (tmp_path / "notes.txt").write_text("not a video\n")
    r = svd("check", tmp_path / "notes.txt")
    assert r.code == 2 and r.err.strip().splitlines()[-1].startswith("svd: error: Could not read")


def own_chain(folder):
    """A signer's own chain (a root and a signing certificate it issued, EC P-256) and key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Jane's root")])

    def issued(name, public, ca):
        usage = x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False)
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(root_name).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        )  # fmt: skip
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        return builder.sign(root_key, hashes.SHA256())

    root = issued(root_name, root_key.public_key(), ca=True)
    leaf = issued(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Jane Doe")]), key.public_key(), ca=False)
    pem = serialization.Encoding.PEM
    (folder / "jane.pem").write_bytes(leaf.public_bytes(pem) + root.public_bytes(pem))
    (folder / "jane.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "root.pem").write_bytes(root.public_bytes(pem))  # self-signed: C2PA signs with no such certificate
    (folder / "other.key").write_bytes(
        root_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "jane.pem", folder / "jane.key"


def test_a_gif_signed_with_the_users_own_certificate_names_its_signer(svd, tmp_path):
    cert, key = own_chain(tmp_path)
    gif = tmp_path / "coffee.gif"
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--format", "gif", "--sign-cert", cert, "--sign-key", key,
            "--out", gif)  # fmt: skip
    assert r.code == 0, r.err
    with c2pa.Reader(str(gif)) as reader:
        assert reader.get_validation_state() == "Valid"
        assert reader.get_active_manifest()["signature_info"]["common_name"] == "Jane Doe"
    r = svd("check", gif)
    assert r.code == 0 and "signed by Jane Doe (" in r.out and "on no trust list this machine knows" in r.out


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--sign-cert", "{cert}"], "--sign-cert {cert}: give the other half too: --sign-key (a PEM file)."),
        (["--sign-cert", "{cert}", "--sign-key", "{other}"],
         "--sign-key {other}: is not the key of the first certificate in {cert}; give its own key."),
        (["--sign-cert", "{png}", "--sign-key", "{key}"],
         "--sign-cert {png}: not a PEM file (no -----BEGIN line); give a PEM certificate chain or key."),
        (["--sign-cert", "{root}", "--sign-key", "{other}"], "--sign-cert {root}: C2PA refuses this chain ("),
        # nothing listens on port 9 of this machine: the authority does not answer, before any work
        (["--sign-tsa", "http://127.0.0.1:9"], "--sign-tsa http://127.0.0.1:9: no time stamp from this authority ("),
        (["--sign-tsa", "ftp://127.0.0.1"],
         "--sign-tsa ftp://127.0.0.1: give the http:// or https:// address of a time-stamp authority."),
    ],
)  # fmt: skip
def test_a_certificate_that_cannot_sign_is_one_line_before_any_work(svd, tmp_path, args, line):
    cert, key = own_chain(tmp_path)
    names = {"cert": cert, "key": key, "other": tmp_path / "other.key", "png": EXAMPLES / "coffee.png",
             "root": tmp_path / "root.pem"}  # fmt: skip
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, *(a.format(**names) for a in args), "--out", tmp_path / "x.mp4")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert r.err.startswith(f"svd: error: {line.format(**names)}")  # c2pa's own words follow "("
    assert "Loading" not in r.err and not (tmp_path / "x.mp4").exists()


def test_an_inpainted_video_says_it_was_edited_from_its_parent():
    from svd_cli.io.credentials import manifest

    recipe = {"command": "inpaint", "input": {"sha256": "ab" * 32}, "output": {"path": "v.inpainted.mp4"},
              "model": {"name": "svd-xt", "repo": "stabilityai/x", "path": "/home/me/models/x"}}  # fmt: skip
    made = manifest(recipe, "v.inpainted.mp4", "mp4", parent=True)
    opened, edited = made["assertions"][0]["data"]["actions"]
    assert opened == {"action": "c2pa.opened", "parameters": {"ingredientIds": ["input"]}}
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert made["assertions"][1]["data"]["model"] == {"name": "svd-xt", "repo": "stabilityai/x"}  # no local path


def test_the_librarys_write_signs_as_the_cli_does_unless_a_call_turns_credentials_off(tiny_dir, tmp_path):
    from PIL import Image

    import svd_cli

    model = svd_cli.load("tiny", device="cpu", size=(128, 64), steps=1, frames=2)
    signed = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1).write(tmp_path / "signed.gif")
    with c2pa.Reader(str(signed)) as reader:
        assert reader.get_validation_state() == "Valid"
        generation = {a["label"]: a["data"] for a in reader.get_active_manifest()["assertions"]}["svd.generation"]
    assert generation["model"] == {"name": "tiny"} and len(generation["recipe_sha256"]) == 64
    bare = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1, credentials=False)
    assert c2pa.Reader.try_create(str(bare.write(tmp_path / "bare.mp4"))) is None


def test_each_frame_of_a_frames_folder_carries_its_own_and_a_replaced_frame_is_named(svd, tmp_path):
    from PIL import Image

    folder = tmp_path / "coffee"
    assert svd("animate", EXAMPLES / "coffee.png", *FAST, "--format", "frames", "--out", folder).code == 0
    frames = sorted(folder.glob("frame_*.png"))
    for frame in frames:
        with c2pa.Reader(str(frame)) as reader:
            assert reader.get_validation_state() == "Valid"
            assert reader.get_active_manifest()["title"] == f"coffee/{frame.name}"
    r = svd("check", folder)
    assert r.code == 0 and "credentials: valid (each of its 2 frames), unchanged since signed" in r.out
    Image.open(frames[1]).save(frames[1])  # the same pixels, saved by another program: no credentials
    r = svd("check", folder)
    assert r.code == 1 and f"it changed since it was signed ({frames[1].name} carries none)" in r.out
