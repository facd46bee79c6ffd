"""Content credentials: a signed C2PA manifest inside every MP4 and GIF svd writes.

The manifest (c2pa-python) says the file was created by a generator (svd and its version; the action
`c2pa.created` with IPTC's digital source type for trained algorithmic media, or `c2pa.edited` for an inpainted
video), from which picture or video (an ingredient; its own credentials come along if it had any), with which
model (name, repository, revision, a single file's SHA-256) and which recipe (the SHA-256 of the sidecar beside
it, `recipe_digest`; the input's SHA-256 as well), in svd's own assertion `GENERATION`.

Who signs: `--sign-cert`/`--sign-key` (a PEM chain and its key), or by default a chain svd makes once in its
config folder (`credentials/`): a root certificate of its own and a signing certificate issued from it, as C2PA's
certificate profile refuses a self-signed signing certificate. That root is on no trust list, so a reader finds the
signature valid and its signer unknown: the credential proves the file is unchanged since it was signed, not who
made it. No time-stamp authority is asked unless `--sign-tsa` names one, so signing works offline.

MP4 and GIF carry credentials, and each PNG of a frames folder its own, as does the still of a first frame the
text-to-image model drew (naming that model); WebM does not (c2pa cannot carry them in WebM).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import OptionError, SvdError, ref
from ..paths import user_config_dir
from .safety import TEMP_MARK, frame_pngs, remove, temp_path_for

# The written formats that carry credentials, and the media type c2pa signs them as (a frames folder: each PNG).
SIGNED_FORMATS = {"mp4": "video/mp4", "gif": "image/gif", "frames": "image/png"}
SIGNED_SUFFIXES = {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png"}
GENERATION = "svd.generation"  # svd's own assertion: model, input and recipe
INGREDIENT = "input"  # the label that ties an edit's opened action to its parent ingredient
# IPTC's digital source types (cv.iptc.org/newscodes/digitalsourcetype): a video made by svd, an inpainted one.
SOURCE_TYPES = {
    "created": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    "edited": "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia",
}
INGREDIENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                    ".gif": "image/gif", ".mp4": "video/mp4", ".tif": "image/tiff", ".tiff": "image/tiff"}  # fmt: skip
LOCAL_FOLDER = "credentials"
LOCAL_FILES = ("svd-root.pem", "svd-signer.pem", "svd-signer.key")  # the root, the signing chain, its key
VALID_YEARS = 10
# Fields of a recipe its digest leaves out: they describe the signed file, which the digest is signed into.
UNSIGNED_OUTPUT_FIELDS = ("bytes", "sha256")


@dataclass(frozen=True)
class SigningKey:
    """A certificate chain (signing certificate first, PEM) and its private key, ready for c2pa."""

    chain: bytes
    key: bytes
    algorithm: str  # c2pa's name: es256, es384, es512, ps256, ed25519
    source: str  # "svd's local certificate" or the certificate file's path
    time_stamps: str | None = None  # a time-stamp authority's URL (None: no time stamp, signing works offline)


def signing_key(
    cert: Path | None, key: Path | None, time_stamps: str | None = None, config: Path | None = None
) -> SigningKey:
    """The user's chain and key when both are given, else svd's local chain (made on first use), time-stamped
    by the authority at `time_stamps` if one is given.

    One OptionError line for a missing, unreadable or mismatched file, or an authority that does not answer,
    before any work."""
    if (cert is None) != (key is None):
        given, missing = ("sign_cert", "sign_key") if cert is not None else ("sign_key", "sign_cert")
        raise OptionError(given, cert or key, f"give the other half too: {ref(missing)} (a PEM file).")
    if cert is None:
        signing = _local_key(config or user_config_dir())
    else:
        chain, pem_key = _read_pem("sign_cert", cert), _read_pem("sign_key", key)
        signing = _checked_key(chain, pem_key, cert, key, source=str(cert))
    if time_stamps is None:
        return signing
    if not time_stamps.startswith(("http://", "https://")):
        raise OptionError("sign_tsa", time_stamps, "give the http:// or https:// address of a time-stamp authority.")
    signing = replace(signing, time_stamps=time_stamps)
    if (refused := _trial_signature(signing)) is not None:
        raise OptionError("sign_tsa", time_stamps, f"no time stamp from this authority ({refused}); check the "
                          "address, or leave it out (the credentials are then signed offline, undated).")  # fmt: skip
    return signing


def _read_pem(option: str, path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()[: 1 << 20]
    except OSError as exc:
        problem = "file not found" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
        raise OptionError(option, path, f"{problem}; give a PEM file.") from None
    if b"-----BEGIN " not in data:
        raise OptionError(option, path, "not a PEM file (no -----BEGIN line); give a PEM certificate chain or key.")
    return data


def _checked_key(chain: bytes, pem_key: bytes, cert: Path, key: Path, source: str) -> SigningKey:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError:
        raise OptionError("sign_cert", cert, "holds no readable PEM certificate.") from None
    try:
        private = serialization.load_pem_private_key(pem_key, password=None)
    except (ValueError, TypeError):
        raise OptionError("sign_key", key, "holds no readable unencrypted PEM private key.") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, public) != private.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise OptionError("sign_key", key, f"is not the key of the first certificate in {cert}; give its own key.")
    if isinstance(private, ec.EllipticCurvePrivateKey):
        algorithm = {256: "es256", 384: "es384", 521: "es512"}.get(private.curve.key_size)
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519"
    elif isinstance(private, rsa.RSAPrivateKey):
        algorithm = "ps256"
    else:
        algorithm = None
    if algorithm is None:
        raise OptionError("sign_key", key, "is not a key C2PA signs with (EC P-256/384/521, Ed25519 or RSA).")
    signing = SigningKey(chain, pem_key, algorithm, source)
    if (refused := _trial_signature(signing)) is not None:  # c2pa checks the chain only when it signs
        raise OptionError("sign_cert", cert, f"C2PA refuses this chain ({refused}); give a signing certificate "
                          "issued by a CA (not self-signed), with digitalSignature and an extended key usage such as "
                          "emailProtection.")  # fmt: skip
    return signing


def _trial_signature(signing: SigningKey) -> str | None:
    """Why c2pa refuses to sign with `signing`, found by signing a blank picture in memory; None if it signs."""
    import io

    import c2pa
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (1, 1)).save(picture, format="PNG")
    picture.seek(0)
    trial = manifest({}, "svd's trial signature", "frames")  # a PNG, as a frame is
    try:
        info = c2pa.C2paSignerInfo(signing.algorithm.encode(), signing.chain, signing.key, signing.time_stamps)
        with c2pa.Builder(json.dumps(trial)) as builder, c2pa.Signer.from_info(info) as signer:
            builder.sign(signer, "image/png", picture, io.BytesIO())
    except c2pa.C2paError as exc:
        return " ".join(str(exc).split())  # c2pa's words, on one line
    return None


def _local_key(config: Path) -> SigningKey:
    """svd's own chain in `config`/credentials/, made once (atomically: a half-made chain is never used)."""
    folder = config / LOCAL_FOLDER
    root, chain, key = (folder / name for name in LOCAL_FILES)
    if not all(path.is_file() for path in (root, chain, key)):
        _make_local_chain(folder)
    return SigningKey(chain.read_bytes(), key.read_bytes(), "es256", "svd's local certificate")


def _make_local_chain(folder: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "svd (local, unverified)")])  # fmt: skip

    def usage(*, signs_certificates: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=not signs_certificates, content_commitment=False,
                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                             key_cert_sign=signs_certificates, crl_sign=signs_certificates, encipher_only=False,
                             decipher_only=False)  # fmt: skip

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = name("svd local root")

    def certificate(subject: x509.Name, public, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365 * VALID_YEARS))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(usage(signs_certificates=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    root = certificate(root_name, root_key.public_key(), ca=True).sign(root_key, hashes.SHA256())
    # C2PA's profile for a signing certificate: not a CA, digitalSignature, an extended key usage it lists
    # (emailProtection), no anyExtendedKeyUsage, issued by another certificate (the root above).
    signer = (
        certificate(name("svd signer"), signer_key.public_key(), ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    contents = (
        root.public_bytes(pem),
        signer.public_bytes(pem) + root.public_bytes(pem),
        signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.with_name(f".{folder.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    building.mkdir(mode=0o700)
    try:
        for file_name, data in zip(LOCAL_FILES, contents, strict=True):
            path = building / file_name
            path.touch(mode=0o600)
            path.write_bytes(data)
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(building, folder)  # a chain another process made first wins: it signs with that one
    finally:
        remove(building)
    if not all((folder / file_name).is_file() for file_name in LOCAL_FILES):
        raise SvdError(f"{folder} exists without svd's signing certificate and key in it; move it away and run "
                       "again (svd makes them there once).", path=folder)  # fmt: skip


def local_root(config: Path | None = None) -> bytes | None:
    """svd's local root certificate (PEM) on this machine, if it made one."""
    path = (config or user_config_dir()) / LOCAL_FOLDER / LOCAL_FILES[0]
    return path.read_bytes() if path.is_file() else None


# --- writing ------------------------------------------------------------------------------------------------


def recipe_digest(recipe: dict) -> str:
    """SHA-256 of a recipe as svd writes it beside its video, less the fields that describe the signed file."""
    output = {k: v for k, v in recipe.get("output", {}).items() if k not in UNSIGNED_OUTPUT_FIELDS}
    return hashlib.sha256(json.dumps({**recipe, "output": output}, sort_keys=True).encode()).hexdigest()


def manifest(recipe: dict, title: str, fmt: str, parent: bool = False, model: dict | None = None) -> dict:
    """The C2PA manifest of one video made by `recipe`; `parent`: an inpainted video's input is its ingredient
    `INGREDIENT` (C2PA wants an edit to open its parent first; without one, the video is created, as a composite);
    `model`: the model that made it, when not the recipe's video model (the text-to-image model of a still)."""
    inpainted = recipe.get("command") == "inpaint"
    agent = {"name": "svd", "version": __version__}
    source_type = SOURCE_TYPES["edited" if inpainted else "created"]
    made = {"action": "c2pa.edited" if inpainted and parent else "c2pa.created", "digitalSourceType": source_type,
            "softwareAgent": agent}  # fmt: skip
    opened = [{"action": "c2pa.opened", "parameters": {"ingredientIds": [INGREDIENT]}}] if inpainted and parent else []
    generation = {
        "model": {k: v for k, v in (model or recipe.get("model") or {}).items() if k != "path" and v is not None},
        "input_sha256": (recipe.get("input") or {}).get("sha256"),
        "recipe_sha256": recipe_digest(recipe),
    }
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": SIGNED_FORMATS[fmt],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [*opened, made]}},
            {"label": GENERATION, "data": generation},
        ],
    }


def sign(
    path: Path, fmt: str, recipe: dict, key: SigningKey, ingredient: Path | None, title: str, model: dict | None = None
) -> None:
    """Sign the written file at `path` in place (through a temporary file beside it), or each PNG of a frames
    folder; `ingredient` is the picture or video it was made from (recorded when c2pa knows its format), `model`
    the model that made it when not the recipe's video model."""
    files = frame_pngs(path) if path.is_dir() else [path]
    for file in files:
        _sign_file(file, fmt, recipe, key, ingredient, f"{title}/{file.name}" if path.is_dir() else title, model)


def _sign_file(
    path: Path, fmt: str, recipe: dict, key: SigningKey, ingredient: Path | None, title: str, model: dict | None
) -> None:
    import c2pa

    media = INGREDIENT_TYPES.get(ingredient.suffix.lower()) if ingredient is not None and ingredient.is_file() else None
    inpainted = recipe.get("command") == "inpaint"
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})  # no copy of the input inside
    signed = temp_path_for(path)
    try:
        made = manifest(recipe, title, fmt, parent=inpainted and media is not None, model=model)
        with c2pa.Builder(json.dumps(made), context=context) as builder:
            if media is not None:
                facts = {"title": ingredient.name, "relationship": "parentOf" if inpainted else "inputTo",
                         "label": INGREDIENT}  # fmt: skip
                with ingredient.open("rb") as stream:
                    builder.add_ingredient(json.dumps(facts), media, stream)
            info = c2pa.C2paSignerInfo(key.algorithm.encode(), key.chain, key.key, key.time_stamps)
            with c2pa.Signer.from_info(info) as signer, path.open("rb") as source, signed.open("w+b") as target:
                builder.sign(signer, SIGNED_FORMATS[fmt], source, target)
        os.replace(signed, path)
    except c2pa.C2paError as exc:
        raise SvdError(f"Could not sign the content credentials of {title} with {key.source}: "
                       f"{' '.join(str(exc).split())}; check the certificate, or turn {ref('credentials')} "
                       "off.") from None  # fmt: skip
    finally:
        remove(signed)


# --- reading ------------------------------------------------------------------------------------------------


@dataclass
class Credentials:
    """What a file's content credentials say, as `svd check` reports them."""

    state: str  # none | invalid | valid (signature intact, signer unknown) | trusted (by a root this machine trusts)
    signer: str | None = None
    issuer: str | None = None
    by_this_machine: bool = False  # signed with the chain svd made on this machine
    action: str | None = None
    source_type: str | None = None
    made_from: str | None = None  # the ingredient's title
    generation: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    frames: int | None = None  # a frames folder: how many frames carry them (each its own)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def carries_credentials(path: Path) -> bool:
    """Whether `path` is of a kind svd signs: an MP4, a GIF, or a frames folder."""
    return path.is_dir() or path.suffix.lower().lstrip(".") in SIGNED_FORMATS.keys() - {"frames"}


def read_credentials(path: Path, config: Path | None = None) -> Credentials:
    """The content credentials in `path` (a frames folder: in each frame) checked against its bytes; this
    machine's svd root counts as trusted."""
    root = local_root(config)
    if not path.is_dir():
        return _read_file(path, root)
    frames = frame_pngs(path)
    reports = [_read_file(frame, root) for frame in frames]
    if not reports or all(report.state == "none" for report in reports):
        return Credentials("none")
    for frame, report in zip(frames, reports, strict=True):
        if report.state in ("none", "invalid"):  # a frame changed, or replaced by one without credentials
            failures = [f"{frame.name}: {failure}" for failure in report.failures] or [f"{frame.name} carries none"]
            report.state, report.failures = "invalid", failures
            return report
    reports[0].frames = len(frames)
    return reports[0]


def _read_file(path: Path, root: bytes | None) -> Credentials:
    import c2pa

    settings = {"trust": {"user_anchors": root.decode()}, "verify": {"verify_trust": True}} if root else {}
    with path.open("rb") as stream:
        try:
            reader = c2pa.Reader.try_create(_reader_format(path), stream, None, c2pa.Context.from_dict(settings))
        except c2pa.C2paError as exc:
            return Credentials("invalid", failures=[" ".join(str(exc).split())])
        if reader is None:
            return Credentials("none")
        with reader:
            state = (reader.get_validation_state() or "Invalid").lower()
            active = reader.get_active_manifest() or {}
            results = (reader.get_validation_results() or {}).get("activeManifest") or {}
    failures = [item.get("code", "") for item in results.get("failure", []) if item.get("code")]
    report = Credentials(state if state in ("valid", "trusted") else "invalid", failures=failures)
    info = active.get("signature_info") or {}
    report.signer, report.issuer = info.get("common_name"), info.get("issuer")
    report.by_this_machine = root is not None and state == "trusted"  # this machine's root is the only anchor
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            made = (assertion.get("data", {}).get("actions") or [{}])[-1]  # an edit opens its parent first
            report.action, report.source_type = made.get("action"), made.get("digitalSourceType")
        elif assertion.get("label") == GENERATION:
            report.generation = assertion.get("data") or {}
    ingredients = active.get("ingredients") or []
    report.made_from = ingredients[0].get("title") if ingredients else None
    return report


def _reader_format(path: Path) -> str:
    return SIGNED_SUFFIXES.get(path.suffix.lower(), "application/octet-stream")
