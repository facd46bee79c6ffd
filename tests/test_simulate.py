"""The simulator: the real generation code on fake tensors, its peaks and FLOPs, `svd plan`, and auto's use of it."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import replace

import pytest
import torch

from svd_cli.memory import PROFILE_ORDER, plan_for
from svd_cli.planning.simulate import RECIPES, Job, architecture_for, free_bytes_needed, simulate

from .conftest import EXAMPLES

TINY = architecture_for("tiny")
JOB = Job(frames=4, width=256, height=128, dtype="fp32")


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _tensor_bytes(module) -> int:
    """Parameters and buffers (CLIP's position ids: 50 int64)."""
    return _param_bytes(module) + sum(b.numel() * b.element_size() for b in module.buffers())


def test_turning_offload_off_adds_exactly_the_idle_weights_to_the_denoise_peak():
    # With model offload only the UNet is on the device while denoising; with every weight resident the CLIP
    # encoder and the VAE sit there too. The activations are the same, so the step's peak differs by exactly
    # their bytes, counted by hand from the tensor shapes of a real tiny pipeline (fp32: 4 bytes a weight).
    from svd_cli.models.architectures import build_random_pipeline

    pipe = build_random_pipeline("tiny", dtype=torch.float32)
    idle = _tensor_bytes(pipe.image_encoder) + _tensor_bytes(pipe.vae)
    offloaded = simulate(TINY, replace(plan_for("balanced"), offload="model"), JOB, use_cache=False)
    resident = simulate(TINY, replace(plan_for("balanced"), offload="none"), JOB, use_cache=False)
    assert resident.stage_peak_bytes["step"] - offloaded.stage_peak_bytes["step"] == idle
    assert resident.weights_bytes == _param_bytes(pipe.unet) + _param_bytes(pipe.image_encoder) + _param_bytes(pipe.vae)


def test_cfg_split_halves_the_unet_activations():
    # CFG split off runs the UNet on a batch of 2 x frames instead of two batches of frames: the denoise peak
    # above the weights (which are the same) roughly doubles.
    split = simulate(TINY, replace(plan_for("high"), cfg_split=True), JOB, use_cache=False)
    batched = simulate(TINY, plan_for("high"), JOB, use_cache=False)
    weights = split.weights_bytes  # high keeps every weight resident
    ratio = (batched.stage_peak_bytes["step"] - weights) / (split.stage_peak_bytes["step"] - weights)
    assert 1.7 < ratio < 2.2, ratio
    assert batched.stage_flops["step"] == split.stage_flops["step"]  # same work, scheduled differently


def test_simulated_unet_step_flops_equal_flop_counter_on_a_real_cpu_run():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from svd_cli.models.architectures import build_random_pipeline

    simulated = simulate(TINY, plan_for("high"), JOB, use_cache=False).stage_flops["step"]

    # The same step for real: one UNet call on the CFG batch (2 x frames), on the CPU. PyTorch's CPU flash
    # kernel has no FLOP formula, so attention runs the math kernel here (its two matmuls are counted).
    unet = build_random_pipeline("tiny", dtype=torch.float32).unet
    f, h, w = JOB.frames, JOB.height // 8, JOB.width // 8
    args = (torch.randn(2, f, 8, h, w), torch.tensor(1.0))
    kwargs = dict(encoder_hidden_states=torch.randn(2, 1, 32), added_time_ids=torch.randn(2, 3), return_dict=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        unet(*args, **kwargs)
    assert simulated == counter.get_total_flops() > 0


def test_svd_plan_runs_offline_with_no_weights_for_the_full_size_model(svd, monkeypatch, isolated_home):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Full-size SVD-XT architecture at a small job, to keep the test quick; the default job runs the same code.
    args = ("plan", "--model", "svd-xt", "--frames", "2", "--size", "256x128", "--json")
    with _library_warnings() as warned:
        r = svd(*args)
    assert r.code == 0, r.err
    # A note on stderr as each row starts and ends, and no library warning (diffusers warns when a fake
    # component is cast to another dtype).
    assert warned == [] and "warn" not in r.err.lower(), warned or r.err
    names = [*PROFILE_ORDER, *RECIPES]
    for index, name in enumerate(names, 1):
        assert f"Simulating {name} ({index}/{len(names)})..." in r.err
        assert re.search(rf"^  {name}: \d+\.\d s$", r.err, re.MULTILINE), r.err
    report = json.loads(r.out)
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == [*PROFILE_ORDER, *RECIPES]
    for row in rows.values():
        assert row["peak_bytes"] > 0 and row["tflops"] > 0, row
        assert set(row["time_floor_seconds"]) == {"H100", "A100", "RTX 4090", "RTX 3060"}
    # Every profile does the same work per step; the leaner ones hold less at once.
    assert len({row["stage_flops"]["step"] for row in rows.values()}) == 1
    assert rows["min"]["peak_bytes"] < rows["low"]["peak_bytes"] < rows["high"]["peak_bytes"]
    assert rows["high"]["weights_bytes"] > 4 * 2**30  # fp16 SVD-XT: UNet + CLIP + VAE
    assert report["auto"] is None  # no GPU here and no --vram
    assert not any((isolated_home / "hf").rglob("*.safetensors"))

    again = svd(*args, "--vram", "80")
    assert again.code == 0, again.err
    report = json.loads(again.out)
    assert all(row["cached"] for row in report["rows"])  # the second run reads the cache
    assert report["auto"] == "high" and "simulated" in report["auto_reason"] and report["fp8_would_fit"] is None

    # On a 5 GB card auto offloads (streamed, low); with the UNet's weights in fp8 high would fit, and plan says so
    # (auto never turns fp8 on: it changes the frames).
    small = json.loads(svd(*args, "--vram", "5").out)
    assert small["auto"] == "low" and small["fp8_would_fit"] == "high"
    # `--memory auto` on such a card gives the same choice and says so in its reason (the rows from the cache).
    from svd_cli.planning.simulate import pick_simulated

    job = Job(frames=2, width=256, height=128, dtype="fp16")
    auto = pick_simulated(architecture_for("svd-xt"), job, small["free_bytes"], {}, simulate)
    assert auto.profile == "low" and "with fp8 weights high would keep every weight on the card" in auto.reason

    table = svd("plan", "--model", "svd-xt", "--frames", "2", "--size", "256x128", "--vram", "80")
    assert table.code == 0, table.err
    assert "  high: from the cache" in table.err
    # Piped (as here): plain text within 80 columns, no padding; the savers are listed under the table.
    assert "--memory auto would pick high" in table.out and "diffusers-lowmem" in table.out
    lines = table.out.splitlines()
    assert max(len(line) for line in lines) <= 80 and all(line == line.rstrip() for line in lines), table.out
    assert "\x1b[" not in table.out
    assert "min: sequential offload, CFG split" in table.out


@contextlib.contextmanager
def _library_warnings():
    """Warnings from Python's `warnings` and from the diffusers and transformers loggers, as they happen."""
    import logging
    import warnings

    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records
        # What a user would see: Python hides deprecation warnings outside __main__.
        hidden = (DeprecationWarning, PendingDeprecationWarning)
        records += [str(w.message) for w in caught if not issubclass(w.category, hidden)]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def test_svd_plan_rejects_an_unknown_model(svd):
    r = svd("plan", "--model", "no-such-model")
    assert r.code == 2
    assert "--model no-such-model" in r.err and "svd-xt" in r.err


def _tiny_simulated_peaks(frames: int, width: int, height: int) -> dict[str, int]:
    job = Job(frames=frames, width=width, height=height, dtype="fp32")
    return {name: simulate(TINY, plan_for(name), job).peak_bytes for name in PROFILE_ORDER}


def _memory_record_of_a_run(svd, tmp_path) -> dict:
    """The memory part of the recipe of a small real run of the tiny model (2 frames, 256x128, one step)."""
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "1",
            "--size", "256x128", "--seed", "1", "--out", tmp_path / "v.mp4")  # fmt: skip
    assert r.code == 0, r.err
    return json.loads((tmp_path / "v.mp4.json").read_text())["runtime"]["memory"]


def test_auto_picks_from_simulated_peaks_and_the_sidecar_says_so(svd, tiny_dir, tmp_path, monkeypatch):
    import svd_cli.memory as memory

    peaks = _tiny_simulated_peaks(2, 256, 128)
    # A GPU whose free memory is just what `low` needs: high and balanced need more.
    assert free_bytes_needed(peaks["low"]) < min(free_bytes_needed(peaks[p]) for p in ("high", "balanced"))
    monkeypatch.setattr(memory, "free_device_memory", lambda device: free_bytes_needed(peaks["low"]))
    memory_record = _memory_record_of_a_run(svd, tmp_path)
    assert memory_record["profile"] == "low"
    assert "simulated peak" in memory_record["reason"]


def test_auto_falls_back_to_the_estimate_when_the_simulation_fails(svd, tiny_dir, tmp_path, monkeypatch):
    import svd_cli.memory as memory
    import svd_cli.planning.simulate as simulate_module

    def broken(*args, **kwargs):
        raise RuntimeError("simulation broke")

    monkeypatch.setattr(simulate_module, "simulated_choice", broken)
    monkeypatch.setattr(memory, "free_device_memory", lambda device: 80 * 2**30)
    memory_record = _memory_record_of_a_run(svd, tmp_path)
    assert memory_record["profile"] == "high"
    assert "analytic estimate, the simulation failed (RuntimeError: simulation broke)" in memory_record["reason"]


def test_sliced_attention_on_a_math_kernel_gpu_holds_less_while_denoising():
    # Where SDPA only has the math kernel (Apple MPS), each call materialises its score matrix; slicing bounds it.
    job = Job(frames=2, width=512, height=256, dtype="fp16", gpu="mps")
    plan = plan_for("balanced")
    sliced = simulate(TINY, replace(plan, attention="sliced", attention_slice_scores=2**14), job, use_cache=False)
    plain = simulate(TINY, replace(plan, attention="sdpa"), job, use_cache=False)
    assert sliced.stage_peak_bytes["step"] < plain.stage_peak_bytes["step"]


def test_replayed_work_counts_exactly_what_simulating_it_again_counts(monkeypatch):
    # The second CFG half, decode chunks, tiles, feed-forward slices and UNet blocks that repeat are simulated
    # once and replayed; a tiled job of the tiny model, every repeat simulated again instead, counts the same.
    import svd_cli.planning.simulate as simulate_module
    from svd_cli.planning.simulate import simulate_recipe

    job = Job(frames=5, width=512, height=320, dtype="fp16")  # 2 x 2 tiles of 256, decoded 2, 2 and 1 frames

    def rows() -> dict:
        sims = [simulate(TINY, plan_for("min"), job, use_cache=False)]
        sims.append(simulate_recipe(TINY, "diffusers-lowmem", job, use_cache=False))
        return {s.name: (s.peak_bytes, s.stage_peak_bytes, s.stage_flops) for s in sims}

    replays = []
    replay = simulate_module._Replays._replay
    monkeypatch.setattr(simulate_module._Replays, "_replay", lambda self, *a: replays.append(a) or replay(self, *a))
    replayed = rows()
    assert len(replays) > 20  # chunks, tiles, slices and blocks were replayed
    monkeypatch.setattr(simulate_module._Replays, "call", lambda self, records, key, run: run())
    assert rows() == replayed


def test_svd_plan_takes_animates_options_and_reports_the_whole_video(svd, isolated_home):
    """`svd plan` has `svd animate`'s options; with --extend 2 and --upscale 2 every clip's animate pass and the
    upscaler on every frame are in the FLOPs, and the upscaler's tiles have their own peak."""
    job = ("plan", "--model", "tiny", "--frames", "4", "--size", "256x128", "--memory", "low", "--json")
    plain = json.loads(svd(*job).out)
    r = svd(*job, "--extend", "2", "--loop", "bounce", "--upscale", "2", "--upscaler", "tiny-upscaler",
            "--interpolate", "2", "--motion-bucket", "40", "--seed", "3")  # fmt: skip
    assert r.code == 0, r.err
    chain = json.loads(r.out)
    # 4 + 2 x 3 = 10 frames, bounced: 18 upscaled, then interpolated as a loop: 36 written.
    assert chain["chain"] == {"clips": 3, "upscaler": "tiny-upscaler", "upscaled_frames": 18, "output_frames": 36}
    for before, after in zip(plain["rows"], chain["rows"], strict=True):
        upscale_peak, upscale_flops = after["stage_peak_bytes"]["upscale"], after["stage_flops"]["upscale"]
        assert upscale_peak > 0 and upscale_flops > 0
        assert after["flops"] == 3 * before["flops"] + 18 * upscale_flops > 3 * before["flops"]
        assert after["peak_bytes"] == max(before["peak_bytes"], upscale_peak)
    refused = svd(*job, "--upscale", "2", "--upscaler", "my-upscaler.safetensors")
    assert refused.code == 2 and "svd plan simulates the registry's upscalers" in refused.err


def test_a_plan_without_cfg_runs_one_unet_batch_a_step_and_animatelcm_plans_as_svd_xt():
    job = Job(frames=2, width=128, height=64, dtype="fp32")
    guided = simulate(TINY, plan_for("high"), job, use_cache=False)
    single = simulate(TINY, plan_for("high"), replace(job, guided=False), use_cache=False)
    assert single.stage_flops["step"] * 2 == guided.stage_flops["step"]
    assert single.stage_flops["decode"] == guided.stage_flops["decode"]
    # AnimateLCM's entry: SVD-XT's folders with a UNet of the same shapes (4 steps, no CFG: its registry defaults).
    assert architecture_for("animatelcm-svd-xt").key() == architecture_for("svd-xt").key()


def test_doctor_and_auto_pick_through_one_function():
    """`--memory auto` simulates; `svd doctor` asks the same function with the cache only, and says when a
    profile it needs was never simulated."""
    from svd_cli.planning.simulate import MissingSimulation, cached_simulation, pick_simulated

    job = Job(frames=3, width=192, height=64, dtype="fp32")  # a job no other test simulates
    with pytest.raises(MissingSimulation):
        pick_simulated(TINY, job, 2**40, {}, cached_simulation)
    chosen = pick_simulated(TINY, job, 2**40, {}, simulate)
    assert chosen.profile == "high" and pick_simulated(TINY, job, 2**40, {}, cached_simulation) == chosen


def test_transfers_count_offloaded_weights_once_or_every_call_as_the_hooks_move_them():
    """Host <-> device copies: resident weights move once a video; model offload moves the UNet in once (not per
    step); streamed and sequential offload move every UNet weight in for each of a step's two CFG halves, beside
    the computation (the floor takes the longer of the two, and adds the copies that block it)."""
    from diffusers import UNetSpatioTemporalConditionModel

    from svd_cli.models.architectures import ARCHITECTURES, build_random_pipeline
    from svd_cli.planning.simulate import Job, architecture_for, simulate, time_floors

    unet = UNetSpatioTemporalConditionModel(**ARCHITECTURES["tiny"][0])
    unet_bytes = sum(p.numel() for p in unet.parameters()) * 2  # fp16
    job = Job(frames=2, width=128, height=64, dtype="fp16")
    rows = {name: simulate(architecture_for("tiny"), plan_for(name), job, use_cache=False) for name in PROFILE_ORDER}
    high, low, low_min = rows["high"], rows["low"], rows["min"]
    model = simulate(architecture_for("tiny"), replace(plan_for("low"), offload="model"), job, use_cache=False)
    frames_bytes = 2 * 3 * 64 * 128 * 4  # the finished frames (fp32) back to the host
    assert high.weights_bytes + frames_bytes <= high.placement_transfer_bytes  # and a few buffers:
    assert high.placement_transfer_bytes < high.weights_bytes + frames_bytes + 64 * 1024
    assert high.stage_transfer_bytes["step"] < 1024 and not high.offload
    assert model.offload and model.placement_transfer_bytes >= unet_bytes
    assert model.stage_transfer_bytes["step"] < unet_bytes and model.streamed_bytes(25) == 0

    # Streamed (low): each half's UNet weights (and a few layers' again, where diffusers' prefetch onloads a layer
    # twice), all on the copy stream; the rest (the encoders and the VAE moved whole, inputs, frames) on the
    # compute stream.
    assert low.offload and 2 * unet_bytes <= low.stage_streamed_bytes["step"] < 2 * unet_bytes + 64 * 1024
    assert low.stage_streamed_bytes["step"] <= low.stage_transfer_bytes["step"] < 2 * unet_bytes + 64 * 1024
    video, streamed, rate = low.transfer_bytes(25), low.streamed_bytes(25), 25e9
    assert streamed == 25 * low.stage_streamed_bytes["step"] and low.as_json(25)["streamed_bytes"] == streamed
    compute = time_floors(low.flops(25))["RTX 3060"]
    assert low.as_json(25)["time_floor_seconds"]["RTX 3060"] == pytest.approx(
        max(compute, streamed / rate) + (video - streamed) / rate, abs=0.01
    )

    # Sequential (min): the image encoder's layers stream too, once a video; the VAE moves whole.
    encoder_bytes = _tensor_bytes(build_random_pipeline("tiny", dtype=torch.float16).image_encoder)
    streamed = low_min.stage_streamed_bytes
    assert streamed["encode"] == encoder_bytes and streamed["step"] == low.stage_streamed_bytes["step"]
    assert streamed["decode"] == 0 and low_min.streamed_bytes(25) == encoder_bytes + 25 * streamed["step"]
