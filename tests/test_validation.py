"""Every usage error exits 2 with one clear line naming the option, before any model is loaded."""

from __future__ import annotations

import json

import pytest

from .conftest import EXAMPLES

COFFEE = str(EXAMPLES / "coffee.png")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--fps", "2"], "--fps 2: must be between 3 and 30"),
        (["--fps", "31"], "--fps 31: must be between 3 and 30"),
        (["--motion-bucket", "300"], "--motion-bucket 300: must be between 0 and 255"),
        (["--motion-bucket", "-1"], "--motion-bucket -1: must be between 0 and 255"),
        (["--size", "1000x576"], "the width 1000 must be a multiple of 64"),
        (["--size", "1024x500"], "the height 500 must be a multiple of 64"),
        (["--size", "big"], "write it as WIDTHxHEIGHT"),
        (["--frames", "1"], "--frames 1: must be between 2 and 128"),
        (["--steps", "0"], "--steps 0: must be between 1 and 200"),
        (["--noise-aug", "2"], "--noise-aug 2.0: must be between 0.0 and 1.0"),
        (["--min-cfg", "4", "--max-cfg", "2"], "--min-cfg 4.0 is above --max-cfg 2.0"),
        (["--format", "avi"], "--format avi: choose one of mp4, gif, webm, frames"),
        (["--fit", "zoom"], "--fit zoom: choose one of crop, pad, stretch"),
        (["--memory", "huge"], "--memory huge: choose one of auto, high, balanced, low, min"),
        (["--device", "tpu"], "--device tpu: choose one of auto, cuda, cpu, mps"),
        (["--dtype", "int8"], "--dtype int8: choose one of auto, fp16, bf16, fp32"),
        (["--background", "notacolour"], "--background 'notacolour': not a colour"),
        (["--seeds", "1,x"], "--seeds '1,x': write whole numbers separated by commas"),
        (["--seed", "1", "--variations", "2", "--seeds", "3,4"], "--seeds lists every seed; --seed and --variations"),
        (["--fps", "abc"], "invalid value for --fps: expected a whole number"),
        (["--name", "{stem}/{seed}"], "may not contain path separators"),
        (["--name", ""], "--name '': is empty; give a name template such as {stem}-{seed}."),
        (["--name", "{colour}"], "unknown field {colour}"),
        (["--name", "{stem:>300}"], "--name '{stem:>300}': gives a file name of 304 bytes for"),
        (["--name", "{fps:.0}"], "--name '{fps:.0}': {fps:.0}: a number field takes only a width"),
        (["--name", "{seed:%}"], "--name '{seed:%}': {seed:%}: a number field takes only a width"),
        (["--name", "{stem!r}"], "--name '{stem!r}': {stem!r}: conversions (!r, !s, !a) are not allowed"),
        (["--name", "{stem:05d}"], "{stem:05d}: a text field takes only a width and alignment"),
        (["--name", "{stem.x}"], "{stem.x}: a field is a plain name, without . or [ ]; write {stem}"),
        (["--name", "{stem[0]}"], "{stem[0]}: a field is a plain name"),
        (["--upscale", "3"], "--upscale 3: choose one of 1, 2"),
        (["--no-such-option"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_line(svd, args, needle):
    r = svd("animate", COFFEE, "--model", "tiny", *args)
    assert r.code == 2
    assert len(r.lines) == 1, r.err
    assert r.lines[0].startswith("svd: error: ")
    assert needle in r.lines[0]
    assert "Traceback" not in r.err


def test_missing_input_file_is_a_usage_error(svd, tmp_path):
    r = svd("animate", tmp_path / "nope.png", "--model", "tiny")
    assert r.code == 2
    assert r.lines == [f"svd: error: {tmp_path / 'nope.png'}: no such file or folder."]


def test_unknown_model_name_is_a_usage_error(svd):
    r = svd("animate", COFFEE, "--model", "svd-xxl")
    assert r.code == 2
    names = "svd, svd-xt, svd-xt-1.1, tiny, sv3d-u, sv3d-p, tiny-sv3d, tiny-sv3d-p, animatelcm-svd-xt, svd-xt-file"
    assert f"--model svd-xxl: not a model name ({names})" in r.err


def test_model_folder_without_model_index_is_refused(svd, tmp_path):
    r = svd("animate", COFFEE, "--model", str(tmp_path))
    assert r.code == 2
    assert "no model_index.json there" in r.err


def test_no_inputs_shows_help(svd):
    r = svd("animate")
    assert "Usage:" in r.out + r.err


def test_out_with_one_file_name_for_many_videos_is_refused(svd, tmp_path):
    r = svd("animate", COFFEE, str(EXAMPLES / "chelsea.png"), "--model", "tiny", "--out", tmp_path / "one.mp4")
    assert r.code == 2
    assert "names one file but this run makes 2 videos" in r.err


def test_env_var_value_errors_name_the_variable(svd, monkeypatch):
    monkeypatch.setenv("SVD_FPS", "abc")
    r = svd("animate", COFFEE, "--model", "tiny")
    assert r.code == 2
    assert r.lines == [
        "svd: error: invalid value for --fps (from the environment variable SVD_FPS): expected a whole number. "
        "See `svd animate --help`."
    ]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [("SVD_FRAMES", "-1", "must be between 2 and 128."),
     ("SVD_SEEDS", "1,,2", "write whole numbers separated by commas, e.g. 1,2,3.")],
)  # fmt: skip
def test_an_env_value_out_of_range_names_the_variable_not_a_flag(svd, monkeypatch, tmp_path, variable, value, problem):
    monkeypatch.setenv(variable, value)
    r = svd("animate", COFFEE, "--model", "tiny", "--out", tmp_path / "x.mp4")
    assert r.code == 2 and r.lines == [f"svd: error: {variable}={value}: {problem} Fix or unset {variable}."]


def test_config_show_warns_of_an_env_value_animate_would_refuse(svd, monkeypatch):
    monkeypatch.setenv("SVD_FRAMES", "abc")
    r = svd("config", "show", "--json")
    assert r.code == 0
    assert r.lines == ["svd: warning: SVD_FRAMES=abc: expected a whole number. svd animate refuses it; fix or unset "
                       "SVD_FRAMES."]  # fmt: skip
    rows = {row["option"]: row for row in json.loads(r.out)}
    assert rows["--frames"] == {"option": "--frames", "value": "abc", "source": "env SVD_FRAMES",
                                "problem": "expected a whole number."}  # fmt: skip
    assert "problem" not in rows["--fps"]
    assert "env SVD_FRAMES (invalid)" in svd("config", "show").out


def test_an_empty_seed_between_commas_is_refused(svd, tmp_path):
    r = svd("animate", COFFEE, "--model", "tiny", "--seeds", "1,,2", "--out", tmp_path)
    assert r.code == 2
    assert r.lines == ["svd: error: --seeds '1,,2': write whole numbers separated by commas, e.g. 1,2,3."]


def test_watermark_check_of_a_device_says_it_is_not_a_file(svd):
    r = svd("watermark", "check", "/dev/zero")
    assert r.code == 2
    assert r.lines == ["svd: error: /dev/zero: not a regular file (a device, a pipe or a socket); give the path of a "
                       "video."]  # fmt: skip


def test_sizes_are_shown_in_the_unit_that_fits_them(svd):
    from svd_cli.progress import size_text

    assert [size_text(n) for n in (512, 21_500_000, 67_000_000, 268_000_000, 4_520_000_000)] == [
        "512 bytes", "21.5 MB", "67.0 MB", "268 MB", "4.5 GB"]  # fmt: skip
    table = {line.split()[0]: line for line in svd("weights", "list").out.splitlines()[1:]}
    assert "~21.5 MB" in table["rife"] and "~4.5 GB" in table["svd-xt"], table


def test_debug_shows_the_traceback(svd):
    with pytest.raises(Exception) as info:
        svd("animate", COFFEE, "--model", "tiny", "--fps", "2", "--debug")
    assert (info.value.option, info.value.value, info.value.allowed) == ("fps", 2, (3, 30))  # fields, not text


@pytest.mark.parametrize("vram", ["inf", "nan", "1e308", "0", "-8", "2000"])
def test_plan_refuses_a_card_size_that_is_not_a_number_of_gigabytes(svd, vram):
    r = svd("plan", "--model", "tiny", "--vram", vram)
    assert (r.code, len(r.lines)) == (2, 1), r.err
    assert r.lines[0].startswith("svd: error: --vram ") and "more than 0 and at most 1024" in r.lines[0], r.err
