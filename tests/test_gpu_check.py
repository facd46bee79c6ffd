"""benchmarks/gpu_check.py, the script a lent GPU runs once, on the CPU with the tiny model: the same code path
(every profile and diffusers' recipes run for real, beside the simulation of the same job), and the table that
benchmarks/tables.py prints from its JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from svd_cli.memory import PROFILE_ORDER

from .conftest import ROOT


def test_the_gpu_check_runs_on_the_cpu_and_its_table_reads_the_json(tiny_dir, tmp_path):
    out = tmp_path / "gpu-check.json"
    check = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--model", "tiny",
         "--frames", "2", "--size", "128x64", "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    report = json.loads(out.read_text())
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == [*PROFILE_ORDER, "balanced+fp8", "high+cache3", "high+taesd", "diffusers", "diffusers-lowmem"]
    assert report["device_type"] == "cpu" and report["check_seconds"] > 0
    for row in rows.values():
        assert row["simulated_peak_bytes"] > 0 and row["simulated_tflops"] > 0, row
    for name in PROFILE_ORDER:  # ours: timed per step and for the decode
        assert rows[name]["seconds_per_step"] > 0 and rows[name]["decode_seconds"] > 0, rows[name]
    assert rows["diffusers"]["seconds_per_step"] > 0 and "needs a GPU" in rows["diffusers-lowmem"]["error"]
    # Leaner profiles are simulated to hold less, as svd plan says; fp8 weights hold less than the same profile's,
    # and the feature cache's reuse step (2 steps: one full, one reused) does less work.
    assert rows["min"]["simulated_peak_bytes"] < rows["high"]["simulated_peak_bytes"]
    assert rows["balanced+fp8"]["simulated_peak_bytes"] < rows["balanced"]["simulated_peak_bytes"]
    assert rows["balanced+fp8"]["savers"][-1] == "fp8 weights"
    assert rows["high+cache3"]["simulated_flops"] < rows["high"]["simulated_flops"]
    # A step of the layer-by-layer profiles copies the UNet in, beside the compute; balanced's copies nothing.
    assert rows["low"]["simulated_step_streamed_bytes"] > 0 and rows["min"]["simulated_step_streamed_bytes"] > 0
    assert rows["balanced"]["simulated_step_streamed_bytes"] == 0

    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--gpu-check", str(out)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "GPU check on CPU" in lines[0] and "tiny with random weights, 2 frames 128x64, 2 steps" in lines[0]
    for name in rows:
        assert sum(line.startswith(f"| `{name}` |") for line in lines) == 1, table.stdout
