"""What a user sees while a sweep runs: a live screen on a terminal (driven here under a real pseudo-terminal
and read back through a terminal emulator), plain lines without one, JSON for scripts."""

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import pyte
import pytest
import yaml

from sentune._progress import SweepProgress


def test_progress_counts_the_budget_and_the_best_and_estimates_what_is_left():
    now = [100.0]  # a clock the test moves: the estimate is then exact, however loaded the machine
    p = SweepProgress("quiet", job="j", metric="val_macro_f1", trials=3, max_epochs=4, tuned=["lr"],
                      clock=lambda: now[0])  # fmt: skip
    p.trial_started("a", {"lr": 0.1})
    p.trial_started("b", {"lr": 0.01})
    for epoch, (fa, fb) in enumerate([(0.3, 0.5), (0.4, 0.6)], start=1):
        now[0] += 10.0
        p.result("a", {"lr": 0.1}, {"epoch": epoch, "val_macro_f1": fa}, [])
        p.result("b", {"lr": 0.01}, {"epoch": epoch, "val_macro_f1": fb}, [])
    p.trial_ended("a", "stopped_early")
    assert p.counts() == {"running": 1, "completed": 0, "stopped_early": 1, "errored": 0, "to come": 1}
    assert (p.trained(), p.budget()) == (4, 12)
    assert p.best == ("b", 0.6, 2)
    # 12 - 4 trained - 2 that the stopped trial will not use = 6 epochs left at most
    # the first result at 110 s, 4 epochs by 120 s: 0.4 epochs a second, 15 s for 6 epochs
    assert p.eta_seconds() == pytest.approx(15.0)
    now[0] = 130.0  # nothing more trained in 10 s: the rate falls to 0.2 epochs a second
    assert p.eta_seconds() == pytest.approx(30.0)
    assert p.summary() == (
        "sweep j: 4/12 epochs, 0 completed, 1 stopped early, 0 errored, best b val_macro_f1=0.6000 at epoch 2 in 0:30"
    )


def _job(sst_dir, tmp_path):
    job = dict(
        name="watch",
        trainable="llama_torch",
        data={"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt")},
        search_space={"lr": {"grid": [3.0e-3, 1.0e-3]}},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 3, "batch_size": 16, "max_len": 24},
        search={"algorithm": "grid"},
        scheduler={"type": "fifo"},
        resources={"cpus": 1, "max_concurrent_trials": 2},
        storage_path=str(tmp_path / "results"),
    )
    path = tmp_path / "watch.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"TERM": "xterm-256color"}


@pytest.mark.slow
def test_sentune_run_under_a_terminal_updates_one_screen_in_place_and_ends_with_the_summary(sst_dir, tmp_path):
    job = _job(sst_dir, tmp_path)
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentune.cli", "run", str(job)], stdin=slave, stdout=slave, stderr=slave,
        env=_env() | {"COLUMNS": "160", "LINES": "50"}, cwd=tmp_path, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    screen = pyte.Screen(160, 50)
    stream = pyte.ByteStream(screen)
    raw, renders, deadline = b"", 0, time.monotonic() + 400
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            raw += chunk
            stream.feed(chunk)
            if "epochs " in "\n".join(screen.display) and "running" in "\n".join(screen.display):
                renders += 1
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    text = "\n".join(line.rstrip() for line in screen.display)
    assert proc.returncode == 0, raw.decode(errors="replace")[-3000:]
    assert b"\x1b[" in raw and renders >= 3  # the live view was redrawn in place
    # the screen ends with the live view's last state and the summary
    assert "sweep watch" in text and "epochs 6/6" in text
    assert "sweep watch: 6/6 epochs, 2 completed, 0 stopped early, 0 errored, best" in text
    assert "Leaderboard" in text
    # no line per epoch on a terminal: the view replaced them
    assert " epoch   1  val_macro_f1=" not in raw.decode(errors="replace")


@pytest.mark.slow
def test_without_a_terminal_the_output_is_plain_lines_and_json_is_one_object_per_result(sst_dir, tmp_path):
    job = _job(sst_dir, tmp_path)
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "run", str(job)], capture_output=True, text=True,
                         env=_env() | {"SENTUNE_EVENTS": "log"}, cwd=tmp_path, timeout=400)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\x1b[" not in out.stdout
    epoch_lines = [ln for ln in out.stdout.splitlines() if re.match(r"\[sentune\] \S+ epoch +\d+  val_macro_f1=", ln)]
    assert len(epoch_lines) == 6
    assert "sweep watch: 6/6 epochs, 2 completed" in out.stdout
    # the event lines (SENTUNE_EVENTS=log, as a submitted job runs) are what `sentune logs --follow` turns back
    # into the live view of a submitted sweep
    from sentune._progress import EventFollower

    follower = EventFollower("quiet", echo=lambda line: None)
    for i in range(0, len(out.stdout), 37):  # as the Jobs API streams it: in arbitrary chunks
        follower.feed(out.stdout[i : i + 37])
    follower.close()
    assert follower.view.counts()["completed"] == 2 and follower.view.trained() == 6 and follower.view.budget() == 6

    out = subprocess.run([sys.executable, "-m", "sentune.cli", "run", str(job), "--json"], capture_output=True,
                         text=True, env=_env(), cwd=tmp_path, timeout=400)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(ln) for ln in out.stdout.splitlines() if ln.strip()]
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 6 and {e["epoch"] for e in results} == {1, 2, 3}
    assert all("val_macro_f1" in e and "config/lr" in e for e in results)
    assert [e["event"] for e in events].count("trial_end") == 2
    assert events[-1]["event"] == "summary" and events[-1]["best"]["rank"] == 1


def test_the_live_view_of_a_submitted_job_is_rebuilt_from_its_events_alone(monkeypatch):
    """The follower reads only event lines: human lines may say anything (even look like old progress lines)."""
    import io

    from sentune._progress import EventFollower, SweepProgress, events_to_log

    log = io.StringIO()
    monkeypatch.setenv("SENTUNE_EVENTS", "log")
    view = SweepProgress("quiet", job="j", trials=3, max_epochs=2, tuned=["lr"], events=events_to_log(log))
    view.start()
    log.write("[sentune] t1 epoch   1  val_macro_f1=0.9000  (a human line, free to change)\n")
    for tid, values in (("t1", [0.5, 0.7]), ("t2", [0.6])):
        view.trial_started(tid, {"lr": 0.1})
        for epoch, v in enumerate(values, 1):
            view.result(tid, {"lr": 0.1}, {"epoch": epoch, "val_macro_f1": v}, [])
        view.trial_ended(tid, "completed" if tid == "t1" else "stopped_early")
        log.write("[sentune-event] {not json\n")  # a damaged event line is just a line
    text = log.getvalue()
    shown = []
    follower = EventFollower("quiet", echo=shown.append)
    for i in range(0, len(text), 13):
        follower.feed(text[i : i + 13])
    follower.close()
    rebuilt = follower.view
    assert rebuilt is not None and rebuilt.counts() == view.counts() and rebuilt.trained() == 3
    assert rebuilt.best == ("t1", 0.7, 2) and rebuilt.budget() == 6
    events = [
        json.loads(ln.removeprefix("[sentune-event] "))
        for ln in text.splitlines()
        if ln.startswith('[sentune-event] {"')
    ]
    assert [e["event"] for e in events][:3] == ["sweep", "trial_start", "result"]
    assert len(shown) == 3 and "a human line" in shown[0]


def test_events_carry_no_nan_or_infinity_anywhere(monkeypatch):
    """A diverged loss or a NaN inside a config must not stop a submitted sweep's driver (events are strict JSON)."""
    import io

    from sentune._progress import SweepProgress, events_to_log

    log = io.StringIO()
    monkeypatch.setenv("SENTUNE_EVENTS", "log")
    view = SweepProgress("quiet", job="j", trials=1, max_epochs=1, events=events_to_log(log))
    view.start()
    view.trial_started("t1", {"focal_alpha": [float("nan"), 1.0]})
    view.result("t1", {}, {"epoch": 1, "val_macro_f1": float("inf"), "train_loss": float("nan")}, [])
    lines = [json.loads(ln.removeprefix("[sentune-event] ")) for ln in log.getvalue().splitlines()]
    assert lines[1]["config"]["focal_alpha"] == [None, 1.0] and lines[2]["val_macro_f1"] is None
