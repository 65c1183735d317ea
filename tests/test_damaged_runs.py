"""A crash or a bad byte breaks nothing it should not: the files of a real run, truncated or garbled, are
one line naming the file (or skipped with a warning), `sentune runs` lists a broken run beside the others,
and every file is written whole through one atomic helper."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentune import results
from sentune.errors import SentuneError

pytestmark = pytest.mark.slow

SMALL = ("run.json", "trials.parquet", "epochs.parquet", "evaluation.json", "reference.json", "heartbeat")


def _copy_run(src: Path, dest: Path, *, whole: bool = False) -> Path:
    """The run's own files (``whole``: Ray's state and the checkpoints too) under ``dest/<job>/<run>``."""
    out = dest / "tiny" / src.name
    if whole:
        shutil.copytree(src, out, symlinks=True)
        return out
    out.mkdir(parents=True)
    for name in SMALL:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, out / name)
        elif p.is_file():
            shutil.copy(p, out / name)
    return out


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # a pipe: every column
    return subprocess.run([sys.executable, "-m", "sentune.cli", *args], capture_output=True, text=True, env=env)


def _one_line(exc: BaseException, names: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg and len(msg) <= 300, msg
    assert names in msg, msg


@pytest.mark.parametrize("name", ["trials.parquet", "run.json"])
@pytest.mark.parametrize("cut", ["half", "empty"])
def test_a_truncated_file_of_a_real_run_is_one_line_naming_it(tiny_sweep, tmp_path, name, cut):
    run = _copy_run(tiny_sweep.run_dir, tmp_path)
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    with pytest.raises(SentuneError) as info:
        results.leaderboard(run)
    _one_line(info.value, name)
    out = _cli("results", str(run))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and name in out.stderr, out.stderr


def test_a_truncated_epoch_part_is_skipped_with_a_warning(tiny_sweep, tmp_path, caplog):
    run = _copy_run(tiny_sweep.run_dir, tmp_path)
    parts = sorted((run / "epochs.parquet").glob("part-*.parquet"))
    victim = parts[-1]
    victim.write_bytes(victim.read_bytes()[:40])
    epochs = results.read_epochs(run)  # the other parts (here: the schema part) still read
    assert victim.name in caplog.text and "skipped" in caplog.text
    assert set(epochs.columns) >= {"trial_id", "epoch"}


def test_runs_lists_a_broken_run_beside_the_good_ones(tiny_sweep, tmp_path):
    good = _copy_run(tiny_sweep.run_dir, tmp_path)
    broken = good.parent / "r2"
    shutil.copytree(good, broken)
    (broken / "run.json").write_text('{"job": "tiny", "status": "runn')  # a half-written run.json
    (good / "heartbeat").write_text("12")  # a half-written heartbeat: no beat, not an error
    garbled = good.parent / "r3"
    shutil.copytree(good, garbled)
    (garbled / "trials.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    frame = results.list_runs(tmp_path)
    status = dict(zip(frame["run"], frame["status"]))
    assert status["r1"] == "finished"
    assert status["r2"].startswith("broken (run.json: damaged")
    assert status["r3"].startswith("broken (trials.parquet: damaged")
    out = _cli("runs", str(tmp_path))
    assert out.returncode == 0 and "broken" in out.stdout and "r1" in out.stdout, out.stdout + out.stderr


def test_a_second_driver_is_refused_while_the_first_holds_the_run(tiny_sweep, tmp_path):
    from sentune.tuning import resume_sweep

    run = _copy_run(tiny_sweep.run_dir, tmp_path, whole=True)
    info = json.loads((run / "run.json").read_text())
    results.write_run_info(run, {**info, "status": "interrupted"})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sentune.tuning._run_folder import lock_run as _lock_run;"
         f"_lock_run(__import__('pathlib').Path({str(run)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SentuneError) as refused:
            resume_sweep(run)
        _one_line(refused.value, "another sentune driver is running this sweep")
    finally:
        holder.kill()
        holder.wait()
    (run / "heartbeat").write_text(f"{__import__('time').time():.3f}")  # a live driver elsewhere (another node)
    (run / ".driver.lock").write_text("4242 another-node")
    results.write_run_info(run, {**info, "status": "running"})
    with pytest.raises(SentuneError) as alive:
        resume_sweep(run)
    _one_line(alive.value, "its driver is still running")


_MUTATIONS = st.sampled_from(["truncate", "flip", "random", "empty", "json"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["run.json", "trials.parquet", "epochs", "evaluation.json", "reference.json", "heartbeat"]),
    how=_MUTATIONS,
    where=st.floats(0, 1),
    noise=st.binary(min_size=1, max_size=64),
    doc=st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=8),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=6), c),
        max_leaves=8,
    ),
)
def test_damaged_run_folders_are_a_result_or_one_line(tiny_sweep, tmp_path_factory, target, how, where, noise, doc):
    """Random damage to one file of a real run: every reader (leaderboard, best trial, epochs, the budget, the
    comparison line, `sentune runs`) gives a result or a SentuneError of one line naming the file."""
    root = tmp_path_factory.mktemp("damaged")
    run = _copy_run(tiny_sweep.run_dir, root)
    files = sorted((run / "epochs.parquet").glob("part-*")) if target == "epochs" else [run / target]
    path = files[int(where * (len(files) - 1))]
    data = path.read_bytes() if path.is_file() else b""
    cut = int(where * len(data))
    damaged = {
        "truncate": data[:cut],
        "flip": data[:cut] + noise + data[cut + len(noise) :],
        "random": noise,
        "empty": b"",
        "json": json.dumps(doc).encode(),
    }[how]
    path.write_bytes(damaged)
    readers = [
        lambda: results.leaderboard(run, reference=True),
        lambda: results.best_trial(run),
        lambda: results.read_epochs(run),
        lambda: results.budget(run),
        lambda: results.comparison_line(run),
    ]
    for read in readers:
        try:
            read()
        except SentuneError as exc:
            _one_line(exc, path.name)
    frame = results.list_runs(root)  # never fails for one run
    assert len(frame) == 1
