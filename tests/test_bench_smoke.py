"""Every script under bench/ runs: each in its smallest mode (``--smoke``) as a subprocess of this checkout,
exiting 0 and printing its figures line, so a bench cannot rot unnoticed when the code under it changes.

Each smoke mode is sized to take well under a minute on 2 cores (the whole file a few minutes); a bench whose
smoke mode grows past its limit here is made smaller, not given more time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bench -> (seconds it may take, the figures line it must print: a line of stdout, matched from its start)
BENCHES = {
    "asha_vs_fifo": (240, r"asha_vs_fifo: asha_wall_s=\S+ fifo_wall_s="),
    "gpu_sweep": (240, r"gpu_sweep: wall_s=\S+ samples_per_s=\d+ bare_one=\d+ bare_four=\d+ peak_mem_mb=\S+$"),
    "lstm_epoch": (240, r"(lstm_epoch: \S+=|whole run: bare fit \S+ s, service )"),
    "overhead": (240, r"overhead: ratio=\S+ first_result_s="),
    "report_screenshot": (240, r"report_screenshot: (skipped \(no chromium|plots=\d+/\d+ hover_config=yes)"),
    "results_scale": (120, r"results_scale: us_per_result_1k=\d+"),
    "scale": (240, r"scale: ratio_320=\S+ finish_20_s=\S+ finish_320_s=\S+ peak_rss_mb=\d+$"),
    "serve_latency": (240, r"serve_latency: p50_1=\S+ p99_32=\S+ tps_32=\S+ bare_tps=\S+ ratio_32=\S+$"),
    "submit_latency": (360, r"submit_latency: submit_s=\S+ first_result_s=\S+ done_s=\S+ status=SUCCEEDED"),
    "tuning_quality": (360, r"tuning_quality: manual_test=\S+ sweep_test=\S+ manual_epochs=\d+ sweep_epochs=\d+"),
}


def test_every_bench_is_listed():
    """A new bench gets a smoke run here too."""
    assert sorted(p.stem for p in (ROOT / "bench").glob("*.py")) == sorted(BENCHES)


def _run(script: Path, timeout: float) -> tuple[int, str, str]:
    """Run ``script --smoke`` with this checkout's sentune first on the path; past ``timeout``, interrupt it
    (Ctrl-C: a bench stops what it started) and then kill what is left of its process group."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--smoke"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{script.name} --smoke took over {timeout:.0f} s\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_smoke(name):
    timeout, figures = BENCHES[name]
    t0 = time.perf_counter()
    code, out, err = _run(ROOT / "bench" / f"{name}.py", timeout)
    took = time.perf_counter() - t0
    print(f"{name} --smoke: {took:.1f} s")
    assert code == 0, f"{name} --smoke exited {code}\n{out[-3000:]}\n{err[-3000:]}"
    assert re.search("^" + figures, out, re.MULTILINE), f"{name} --smoke printed no figures line\n{out[-3000:]}"
