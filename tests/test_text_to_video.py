"""Text to video and stylised video: a first frame from a prompt (or a restyled photo), then SVD.

Everything runs the built-in `tiny-t2i` (SDXL's text-to-image classes, tiny random weights, a tokenizer built
from a hand-written vocabulary) and `tiny` models through the same loading code as the real checkpoints.
Only the Hub's HTTP is simulated, for the gated case.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, encoded_stream, read_video, run_subprocess
from .test_weights_and_hub import fake_hub  # noqa: F401  (the simulated Hub, a fixture)

TINY = ["--model", "tiny", "--image-model", "tiny-t2i"]
SMALL = [*TINY, "--frames", "2", "--steps", "1", "--size", "128x64", "--image-steps", "2"]


@pytest.fixture(scope="module")
def tiny_t2i_dir(isolated_home):
    from svd_cli.models.tiny import ensure_tiny_model

    return ensure_tiny_model("tiny-t2i")


def _frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


# --- a video from a prompt ---------------------------------------------------------------------------------


def test_prompt_makes_a_video_and_its_still_and_the_recipe_repeats_both_bit_for_bit(
    svd, tiny_dir, tiny_t2i_dir, tmp_path
):
    r = svd("animate", "--prompt", "a fox", *TINY, "--frames", "4", "--steps", "2", "--size", "256x128",
            "--seed", "5", "--out", tmp_path / "fox.mp4")  # fmt: skip
    assert r.code == 0, r.err
    meta, frames = read_video(tmp_path / "fox.mp4")
    assert frames.shape == (4, 128, 256, 3) and meta["size"] == (256, 128)
    still = Image.open(tmp_path / "fox.png")
    assert still.size == (256, 128) and still.mode == "RGB"
    assert np.asarray(still).std() > 0  # a picture, not a blank
    recipe = json.loads((tmp_path / "fox.mp4.json").read_text())
    assert recipe["input"]["path"] is None and recipe["output"]["still"] == str(tmp_path / "fox.png")
    image = recipe["image"]
    assert (image["prompt"], image["model"]["name"], image["steps"], image["cfg"]) == ("a fox", "tiny-t2i", 2, 0.0)
    assert recipe["settings"]["seed"] == 5
    assert [s["stage"] for s in recipe["stages"]] == ["first_frame", "animate", "watermark", "write"]
    assert "Loading image model" in r.err and "Drawing first frame (2 steps)" in r.err

    again = svd("animate", "--recipe", tmp_path / "fox.mp4.json", "--out", tmp_path / "again.mp4")
    assert again.code == 0, again.err
    assert encoded_stream(tmp_path / "again.mp4") == encoded_stream(tmp_path / "fox.mp4")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(still))
    # The still carries its own credentials (signed anew each time), naming the model that drew it.
    with c2pa.Reader(str(tmp_path / "fox.png")) as reader:
        assert reader.get_validation_state() == "Valid"
        assertions = {a["label"]: a["data"] for a in reader.get_active_manifest()["assertions"]}
    assert assertions["svd.generation"]["model"]["name"] == "tiny-t2i"
    assert assertions["c2pa.actions.v2"]["actions"][0]["action"] == "c2pa.created"


def test_a_prompts_batch_loads_each_model_once_survives_an_overlong_prompt_and_resumes(
    svd, tiny_dir, tiny_t2i_dir, tmp_path
):
    """All first frames with one load of the image model, which is gone before SVD loads once for all videos."""
    from diffusers import UNet2DConditionModel

    from svd_cli import batch, jobs
    from svd_cli.options import Request
    from svd_cli.progress import Progress
    from svd_cli.session import Session

    overlong = "a red fox " * 40  # 122 tokens: CLIP reads 77
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# shots for the trailer\na red fox in snow\n\n   \nthe golden hour\n{overlong}\n")

    class Recorder(Progress):
        def __init__(self):
            self.stages, self.notes, self.image_unets_at_svd_load = [], [], None

        def start(self, stage, total=None):
            self.stages.append(stage)
            if stage == "load":  # SVD is about to load: the text-to-image UNet must already be freed
                gc.collect()
                self.image_unets_at_svd_load = sum(isinstance(o, UNet2DConditionModel) for o in gc.get_objects())

        def note(self, message):
            self.notes.append(message)

    out = tmp_path / "out"
    request = Request(prompts=str(prompts), model="tiny", image_model="tiny-t2i", frames=2, steps=1, size=(128, 64),
                      image_steps=2, seed=3, out=out)  # fmt: skip
    progress = Recorder()
    session = Session(request, progress)
    summary = batch.run_jobs(session, jobs.jobs_for_request(session), batch.Summary())
    assert summary.exit_code == 0 and summary.count("ok") == 3
    assert progress.stages.count("load_image") == 1 and progress.stages.count("load") == 1
    assert progress.stages.count("image") == 3
    last_image = len(progress.stages) - 1 - progress.stages[::-1].index("image")
    assert last_image < progress.stages.index("load"), "every first frame is drawn before SVD loads"
    assert progress.image_unets_at_svd_load == 0
    assert any("122 tokens and the text encoder reads the first 77" in n for n in progress.notes)

    names = sorted(p.name for p in out.iterdir())
    long_name = "-".join(["a-red-fox"] * 6)  # the slug stops at a whole word within 60 characters
    assert names == sorted(f"{n}.{ext}" for n in ("a-red-fox-in-snow", "the-golden-hour", long_name)
                           for ext in ("mp4.json", "mp4", "png"))  # fmt: skip
    meta, frames = read_video(out / "the-golden-hour.mp4")
    assert frames.shape == (2, 64, 128, 3)

    rerun = svd("animate", "--prompts", prompts, *SMALL, "--seed", "3", "--out", out, "--json")
    assert rerun.code == 0, rerun.err
    lines = [json.loads(line) for line in rerun.out.splitlines()]
    assert [x["status"] for x in lines[:-1]] == ["skipped"] * 3
    assert lines[0]["prompt"] == "a red fox in snow" and lines[0]["input"] is None
    assert lines[-1]["skipped"] == 3 and "Loading" not in rerun.err


def test_prompts_from_stdin_name_outputs_by_prompt_and_index():
    from svd_cli.jobs import list_jobs
    from svd_cli.options import Request

    stdin = ["# a comment\n", "A Red Fox, in snow!\n", "\n", "Ünïcode café\n"]
    plan = list_jobs(Request(prompts="-", seed=1), {}, stdin=stdin)
    assert [j.prompt for j in plan.jobs] == ["A Red Fox, in snow!", "Ünïcode café"]
    assert [j.output.name for j in plan.jobs] == ["a-red-fox-in-snow.mp4", "unicode-cafe.mp4"]
    named = list_jobs(Request(prompts="-", seed=1, name="{index}-{prompt}"), {}, stdin=stdin)
    assert [j.output.name for j in named.jobs] == ["0-a-red-fox-in-snow.mp4", "1-unicode-cafe.mp4"]


# --- a stylised video from a photo ---------------------------------------------------------------------------


def test_style_animates_exactly_the_restyled_still_it_saves(svd, tiny_dir, tiny_t2i_dir, tmp_path):
    common = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "4",
              "--format", "frames"]  # fmt: skip
    r = svd("animate", EXAMPLES / "coffee.png", "--style", "watercolor painting", *common, "--image-model",
            "tiny-t2i", "--image-steps", "2", "--out", tmp_path / "styled")  # fmt: skip
    assert r.code == 0, r.err
    still = tmp_path / "styled.styled.png"
    assert Image.open(still).size == (128, 64)
    recipe = json.loads((tmp_path / "styled.frames.json").read_text())
    assert recipe["image"]["style"] == "watercolor painting" and recipe["image"]["style_strength"] == 0.5
    assert recipe["input"]["path"] == str((EXAMPLES / "coffee.png").resolve())
    assert recipe["stages"][0]["source"] == "restyled_image_file"

    # Animating the saved still as a plain photo gives the very same frames; the original photo does not.
    assert svd("animate", still, *common, "--out", tmp_path / "from-still").code == 0
    assert svd("animate", EXAMPLES / "coffee.png", *common, "--out", tmp_path / "from-photo").code == 0
    styled = _frames_of(tmp_path / "styled")
    assert np.array_equal(styled, _frames_of(tmp_path / "from-still"))
    assert not np.array_equal(styled, _frames_of(tmp_path / "from-photo"))

    # A later run over the folder the still was written to does not take the still for a new photo.
    from svd_cli.jobs import list_jobs
    from svd_cli.options import Request

    (tmp_path / "photo.png").write_bytes((EXAMPLES / "coffee.png").read_bytes())
    assert [j.input for j in list_jobs(Request([str(tmp_path)]), {}).jobs] == [tmp_path / "photo.png"]


# --- usage errors: one line, exit 2, before any work ----------------------------------------------------------


@pytest.mark.parametrize(
    "args, line",
    [
        ([EXAMPLES / "coffee.png", "--prompt", "a fox"],
         "--prompt makes the first frame from text, so the input images would be ignored: drop them, or add --style "
         "to restyle them instead."),
        (["--prompt", "  "], "--prompt '  ': is empty; describe the picture in words."),
        (["--prompt", "a fox", "--image-model", "nosuch"],
         "--image-model nosuch: not a model name (sdxl-turbo, tiny-t2i), an existing folder or a Hub repo id like "
         "stabilityai/sdxl-turbo."),
        (["--prompt", "a fox", "--image-model", "svd-xt"],
         "--image-model svd-xt: an image-to-video model, but this setting takes a text-to-image model (sdxl-turbo, "
         "tiny-t2i, a folder or a Hub repo id)."),
        (["--prompt", "a fox", "--model", "tiny-t2i"],
         "--model tiny-t2i: a text-to-image model, but this setting takes an image-to-video model (svd, svd-xt, "
         "svd-xt-1.1, tiny, sv3d-u, sv3d-p, tiny-sv3d, tiny-sv3d-p, animatelcm-svd-xt, svd-xt-file, a folder or a "
         "Hub repo id)."),
        (["--style", "ink"],
         "--style restyles input photos: give one (or put the style into --prompt for a first frame from text)."),
        ([EXAMPLES / "coffee.png", "--style", "ink", "--style-strength", "0.2", "--image-steps", "4"],
         "--style-strength 0.2 of 4 --image-steps runs no step, so the photo would not change: raise "
         "--style-strength or --image-steps."),
        (["--prompts", "no-such-prompts.txt"], "--prompts no-such-prompts.txt: no such file."),
        (["--prompt", "a", "--prompts", "-"], "--prompt and --prompts both give prompts: use one of them."),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_before_any_work(svd, tmp_path, monkeypatch, args, line):
    monkeypatch.chdir(tmp_path)
    r = svd("animate", *args)
    assert (r.code, r.lines) == (2, [f"svd: error: {line}"])
    assert list(tmp_path.iterdir()) == []


def test_a_prompts_file_with_only_comments_is_a_usage_error(svd, tmp_path):
    (tmp_path / "p.txt").write_text("# nothing yet\n\n")
    r = svd("animate", "--prompts", tmp_path / "p.txt")
    assert r.code == 2
    assert r.lines == [f"svd: error: --prompts {tmp_path / 'p.txt'}: no prompts in it (one per line; blank lines "
                       "and # comments are skipped)."]  # fmt: skip


# --- the image model cannot be had ------------------------------------------------------------------------------


def test_offline_without_the_image_model_names_the_fix(svd, tiny_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = svd("animate", "--prompt", "a fox", "--model", "tiny", "--out", tmp_path / "v.mp4")
    assert r.code == 1
    assert r.lines[-1] == (
        "svd: error: sdxl-turbo is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE "
        "and run `svd weights pull sdxl-turbo` while online, or use --image-model tiny-t2i or a local folder."
    )


def test_gated_text_to_image_repo_without_token_names_the_fix(fake_hub, tiny_dir, tmp_path):  # noqa: F811
    endpoint = fake_hub("gated")
    proc = run_subprocess("animate", "--prompt", "a fox", "--model", "tiny", "--image-model", "someone/gated-t2i",
                          "--out", tmp_path / "v.mp4", env={"HF_ENDPOINT": endpoint})  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("svd: error: someone/gated-t2i (someone/gated-t2i) is gated: accept its licence at "
                            "https://huggingface.co/someone/gated-t2i")  # fmt: skip
    assert "`svd weights pull someone/gated-t2i`" in error and "Traceback" not in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


# --- memory: the two models are never on the device together ----------------------------------------------------

GIB = 2**30


def test_auto_plans_each_model_for_the_free_memory_and_the_chain_peaks_at_the_larger():
    """SDXL-Turbo (fp16, drawn at 768x448) then SVD-XT (25 x 1024x576) by the memory engine's estimate."""
    from svd_cli.memory import (
        JobShape,
        chain_peak_bytes,
        choose_profile,
        estimate_peak_bytes,
        fastest_fitting,
        image_plans,
    )

    # Parameter counts of the real components (fp16: 2 bytes each).
    turbo = JobShape(unet_bytes=2 * 2_567_463_684, image_encoder_bytes=2 * (123_060_480 + 694_659_840),
                     vae_bytes=2 * 83_653_863, unet_base_channels=320, vae_base_channels=128, frames=1, width=768,
                     height=448, dtype_bytes=2, cfg=False)  # fmt: skip
    svd_xt = JobShape(unet_bytes=3_049_246_164, image_encoder_bytes=1_264_153_600, vae_bytes=195_485_694,
                      unet_base_channels=320, vae_base_channels=128, frames=25, width=1024, height=576,
                      dtype_bytes=2)  # fmt: skip
    picks = {}
    for free in (24, 12, 8, 6):
        image_plan, _ = fastest_fitting(free * GIB, image_plans(), turbo)
        video_plan, _ = choose_profile(free * GIB, svd_xt)
        picks[free] = (image_plan.offload, video_plan.profile)
        chain = chain_peak_bytes([(image_plan, turbo), (video_plan, svd_xt)])
        alone = (estimate_peak_bytes(image_plan, turbo), estimate_peak_bytes(video_plan, svd_xt))
        assert chain == max(alone) < sum(alone)
    assert picks == {24: ("none", "balanced"), 12: ("none", "balanced"), 8: ("model", "low"), 6: ("sequential", "low")}
    resident = estimate_peak_bytes(image_plans()[0], turbo)
    assert 6 * GIB < resident < 8 * GIB  # why an 8 GB card offloads SDXL-Turbo's weights
