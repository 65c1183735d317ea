"""`tracking: {optuna: true}` mirrors a sweep into an Optuna study as it runs (Optuna's journal file in the run
folder), read back here with plain Optuna; `sentune optuna-dashboard RUN` serves optuna-dashboard on it, fetched
over HTTP; a resumed run goes on with the same Optuna trials; a bad setting is one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import requests

from conftest import make_job
from sentune.errors import ConfigError

STATES = {"completed": "COMPLETE", "stopped_early": "PRUNED", "errored": "FAIL"}


def _study(target, name):
    import optuna

    from sentune.results import open_optuna_storage

    return optuna.load_study(study_name=name, storage=open_optuna_storage(target, create=False))


@pytest.fixture(scope="module")
def mirrored(ray_local, sst_dir, tmp_path_factory):
    """A tiny sweep (a baseline, two grid trials that ASHA tells apart, one confirmation run) mirrored."""
    from sentune.tuning import run_sweep

    spec = make_job(sst_dir, tmp_path_factory.mktemp("optuna"), num_samples=1, baselines=[{"lr": 3.0e-3}],
                    confirm={"top_k": 1, "seeds": 1}, tracking={"optuna": True})  # fmt: skip
    summary = run_sweep(spec, run_id="r1", progress="quiet")
    return summary.run_dir


@pytest.mark.slow
def test_a_sweep_is_mirrored_into_an_optuna_study_one_trial_per_trial(mirrored):
    run_dir = mirrored
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert {"completed", "stopped_early"} <= set(trials.status), trials.status  # ASHA stopped one early
    study = _study(str(run_dir / "optuna.journal"), "tiny/r1")
    assert study.direction.name == "MAXIMIZE"
    assert study.user_attrs["metric"] == "val_macro_f1" and study.user_attrs["run"] == "r1"
    by_id = {t.user_attrs["sentune_trial_id"]: t for t in study.trials}
    assert len(study.trials) == len(by_id) == len(trials)  # one each, none twice
    assert set(by_id) == set(trials.index)
    for tid, row in trials.iterrows():
        t = by_id[tid]
        assert t.state.name == STATES[row.status], (tid, row.status)
        assert t.value == pytest.approx(row.peak_metric)
        assert t.params == {"lr": pytest.approx(row["config/lr"])}
        want = epochs[epochs.trial_id == tid].sort_values("epoch")
        assert sorted(t.intermediate_values) == want.epoch.tolist()
        assert [t.intermediate_values[e] for e in want.epoch] == pytest.approx(want.val_macro_f1.tolist())
        assert t.user_attrs["role"] == row.role and t.user_attrs["epochs_run"] == row.epochs_run
        assert t.user_attrs["config"]["lr"] == pytest.approx(row["config/lr"])
        if row.status == "stopped_early":
            assert t.user_attrs["stop_reason"] == row.stop_reason == "scheduler"
    baseline = next(t for t in study.trials if t.user_attrs["role"] == "baseline")
    assert baseline.user_attrs["baseline"] == 1 and baseline.params["lr"] == pytest.approx(3.0e-3)
    (confirmation,) = [t for t in study.trials if t.user_attrs["role"] == "confirm"]
    assert confirmation.user_attrs["confirm_of"] in set(trials.index)
    confirmed = by_id[confirmation.user_attrs["confirm_of"]]
    assert confirmation.user_attrs["config"]["seed"] != confirmed.user_attrs["config"]["seed"]  # a fresh seed
    # what Optuna makes of it: the best of the COMPLETE trials
    assert study.best_value == pytest.approx(trials[trials.status == "completed"].peak_metric.max())


def _dashboard(run, *extra, port="0"):
    """`sentune optuna-dashboard RUN --port 0` in its own process group; (process, the URL it printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "sentune.cli", "optuna-dashboard", str(run), "--port", port, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/dashboard/studies/(\d+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(line + proc.stdout.read())
    return proc, match


@pytest.mark.slow
def test_the_dashboard_command_serves_the_study_over_http_on_loopback(mirrored):
    trials = pd.read_parquet(mirrored / "trials.parquet")
    proc, url = _dashboard(mirrored)
    try:
        base = f"http://127.0.0.1:{url.group(1)}"
        studies = requests.get(f"{base}/api/studies", timeout=30).json()["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [("tiny/r1", ["maximize"])]
        assert studies[0]["study_id"] == int(url.group(2))
        detail = requests.get(f"{base}/api/studies/{url.group(2)}", params={"after": 0}, timeout=30).json()
        assert detail["name"] == "tiny/r1" and len(detail["trials"]) == len(trials)
        assert {t["state"] for t in detail["trials"]} == {"Complete", "Pruned"}
        assert detail["has_intermediate_values"] is True
        assert [p["name"] for p in detail["intersection_search_space"]] == ["lr"]
        page = requests.get(f"{base}/dashboard/studies/{url.group(2)}", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_sweep_killed_and_resumed_goes_on_writing_the_same_study_without_duplicates(tmp_path):
    import yaml

    from conftest import synthetic_rows, write_sst_file

    samples = 6  # 2 at a time: the kill comes while the study has some ended, one running, not all started
    for split, n, seed in (("train", 1440, 1), ("dev", 80, 2), ("test", 80, 3)):  # epochs of ~0.6 s
        write_sst_file(tmp_path / f"{split}.txt", synthetic_rows(n, seed))
    job = dict(name="killed", trainable="llama_torch",
               data={s: str(tmp_path / f"{s}.txt") for s in ("train", "dev", "test")},
               search_space={"lr": {"loguniform": [1e-4, 1e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}},
               params={"backbone": "random:tiny", "option": "finetune", "epochs": 4, "batch_size": 16, "max_len": 24},
               num_samples=samples, scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
               resources={"cpus": 1, "max_concurrent_trials": 2}, storage_path=str(tmp_path / "results"), seed=11,
               tracking={"optuna": True})  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

    def sentune(*args):
        return subprocess.Popen([sys.executable, "-m", "sentune.cli", *args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def running_in_the_study():
        journal = next((tmp_path / "results" / "killed").glob("*/optuna.journal"), None)
        try:
            trials = _study(str(journal), f"killed/{journal.parent.name}").trials if journal else []
        except Exception:  # noqa: BLE001 (not written yet)
            return None
        running = [t for t in trials if t.state.name == "RUNNING" and len(t.intermediate_values) >= 1]
        ended = [t for t in trials if t.state.is_finished()]
        return (journal.parent, len(trials)) if running and ended and len(trials) < samples else None

    proc = sentune("run", "job.yaml", "-q")
    deadline = time.monotonic() + 300
    while (got := running_in_the_study()) is None:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray and its trials at once: the study has a trial running
    proc.wait(timeout=30)
    run_dir, before = got
    resumed = sentune("resume", str(run_dir), "-q")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    study = _study(str(run_dir / "optuna.journal"), f"killed/{run_dir.name}")
    ids = [t.user_attrs["sentune_trial_id"] for t in study.trials]
    assert len(ids) == len(set(ids)) == len(trials) == samples and len(ids) > before
    for t in study.trials:
        row = trials.loc[t.user_attrs["sentune_trial_id"]]
        assert t.state.name == STATES[row.status] and t.value == pytest.approx(row.peak_metric)
        want = epochs[epochs.trial_id == row.name].sort_values("epoch")
        assert sorted(t.intermediate_values) == want.epoch.tolist()
        assert [t.intermediate_values[e] for e in want.epoch] == pytest.approx(want.val_macro_f1.tolist())


# ---- fast: the mirror on a real record and a real journal (no Ray started), the settings ----


def _recorder(run_dir, **kw):
    from sentune.results import RunRecorder

    opts = dict(job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=3)
    return (RunRecorder.resume if kw.pop("resume", False) else RunRecorder)(run_dir, **opts)


def _mirror(recorder, journal):
    from sentune.search import Domain
    from sentune.tuning._optuna_mirror import OptunaMirror

    space = {"lr": Domain("loguniform", (1e-5, 1e-1)), "batch_size": Domain("choice", (16, 32)), "epochs": 3}
    mirror = OptunaMirror(recorder, target=str(journal), study="j/r", direction="maximize", space=space)
    mirror.open()
    return mirror


def _epoch(recorder, mirror, tid, config, epoch, f1):
    recorder.result(tid, config, {"epoch": epoch, "val_macro_f1": f1, "training_iteration": epoch})
    mirror.sync(tid)


def test_a_resumed_run_goes_on_with_the_same_optuna_trials_and_adds_none_twice(tmp_path):
    journal = tmp_path / "optuna.journal"
    a, b, c = {"lr": 1e-3, "batch_size": 16, "epochs": 3}, {"lr": 1e-2, "batch_size": 32, "epochs": 3}, {"lr": 5.0}
    rec = _recorder(tmp_path)
    mirror = _mirror(rec, journal)
    for tid, config in (("a", a), ("b", b), ("c", c)):
        rec.trial(tid, config, role="baseline" if tid == "a" else None, baseline=1 if tid == "a" else None)
        mirror.sync(tid)
    for epoch, f1 in ((1, 0.5), (2, 0.6)):
        _epoch(rec, mirror, "a", a, epoch, f1)
    _epoch(rec, mirror, "b", b, 1, 0.4)
    rec.completed("b", b)  # one epoch of three: stopped early (the scheduler)
    mirror.sync("b")
    rec.errored("c", c, "boom")
    mirror.sync("c")
    rec.close()
    # the driver dies here: "a" is running in both the record and the study
    study = _study(str(journal), "j/r")
    assert [t.state.name for t in study.trials] == ["RUNNING", "PRUNED", "FAIL"]
    assert study.trials[0].params == {"lr": 1e-3, "batch_size": 16} and study.trials[0].user_attrs["baseline"] == 1
    assert study.trials[1].value == 0.4 and study.trials[1].user_attrs["stop_reason"] == "scheduler"
    assert study.trials[2].params == {} and study.trials[2].user_attrs["config"] == {"lr": 5.0}  # outside its range

    rec = _recorder(tmp_path, resume=True)
    mirror = _mirror(rec, journal)  # a new driver: catches up, adds nothing
    assert len(_study(str(journal), "j/r").trials) == 3
    _epoch(rec, mirror, "a", a, 2, 0.6)  # a retried epoch changes nothing
    _epoch(rec, mirror, "a", a, 3, 0.55)
    rec.completed("a", a)
    mirror.sync("a")
    mirror.sync_all()
    trials = _study(str(journal), "j/r").trials
    assert len(trials) == 3 and [t.user_attrs["sentune_trial_id"] for t in trials] == ["a", "b", "c"]
    assert trials[0].state.name == "COMPLETE" and trials[0].value == 0.6
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.55} and trials[0].user_attrs["peak_epoch"] == 2

    # a trial the record let go (a confirmation run cut short) fails once the sweep is over
    rec.trial("d", a, role="confirm", confirm_of="a")
    mirror.sync("d")
    rec.forget("d")
    mirror = _mirror(rec, journal)
    assert _study(str(journal), "j/r").trials[3].state.name == "RUNNING"  # Tune's state may still bring it back
    mirror.sync_all(final=True)  # the sweep is over: it did not
    trials = _study(str(journal), "j/r").trials
    assert trials[3].state.name == "FAIL" and trials[3].user_attrs["confirm_of"] == "a"
    assert len(trials) == 4


def test_a_mirror_that_cannot_write_warns_once_and_the_sweep_goes_on(tmp_path, caplog):
    rec = _recorder(tmp_path)
    mirror = _mirror(rec, tmp_path / "optuna.journal")
    rec.trial("a", {"lr": 1e-3})

    class Broken:
        def __getattr__(self, name):
            raise OSError("disk full")

    mirror._storage = Broken()
    for _ in range(3):
        mirror.on_trial_start(0, [], type("T", (), {"trial_id": "a"})())
    assert sum("disk full" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "value, message",
    [
        (3, "tracking.optuna: optuna takes true, false, a database URL"),
        ("", "tracking.optuna: optuna takes true, false"),
        ({"url": "x"}, "tracking.optuna: optuna takes true"),
        ("9db://host", "tracking.optuna: a database URL starts with its scheme"),
        ("redis://host:6379", "tracking.optuna: a Redis storage is not supported"),
    ],
)
def test_a_bad_optuna_setting_is_one_line(sst_dir, tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        make_job(sst_dir, tmp_path, tracking={"optuna": value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_run_json_keeps_a_journal_path_resolved_and_a_database_url_without_its_credentials(sst_dir, tmp_path):
    from sentune.tuning._run_folder import stored_spec

    for value, want in (
        ("studies/x.journal", str((tmp_path / "studies" / "x.journal").resolve())),
        ("sqlite:///rel/optuna.db", "sqlite:///rel/optuna.db"),
        ("postgresql://me:secret@db:5432/optuna", "postgresql://***@db:5432/optuna"),
        (True, True),
    ):
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            kept = stored_spec(make_job(sst_dir, tmp_path, tracking={"optuna": value}))["tracking"]["optuna"]
        finally:
            os.chdir(cwd)
        assert kept == want


def _run_json(run_dir, optuna):
    run_dir.mkdir(parents=True)
    info = {"job": "j", "run_id": run_dir.name, "kind": "tune", "spec": {"tracking": {"optuna": optuna}}}
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


@pytest.mark.parametrize(
    "optuna, extra, message",
    [
        (False, [], "its job mirrors no Optuna study"),
        (True, [], "no Optuna journal there"),
        ("postgresql://***@db/optuna", [], "run.json does not keep the credentials of a URL; give it with --storage"),
    ],
)
def test_the_dashboard_command_refuses_in_one_line(tmp_path, optuna, extra, message):
    run_dir = _run_json(tmp_path / "r", optuna)
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "optuna-dashboard", str(run_dir), *extra],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_dashboard_command_refuses_a_study_that_is_not_there_and_a_port_in_use(tmp_path):
    import socket

    from sentune.results import open_optuna_storage

    run_dir = _run_json(tmp_path / "r", True)
    open_optuna_storage(str(run_dir / "optuna.journal"))  # an empty journal: no study yet
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "optuna-dashboard", str(run_dir)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "no Optuna study named j/r (yet)" in out.stderr, out.stderr

    import optuna

    optuna.create_study(study_name="j/r", storage=open_optuna_storage(str(run_dir / "optuna.journal")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = subprocess.run([sys.executable, "-m", "sentune.cli", "optuna-dashboard", str(run_dir), "--port", port],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr
    proc, url = _dashboard(run_dir)  # and with the port free, it serves the (empty) study
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                got = requests.get(f"http://127.0.0.1:{url.group(1)}/api/studies/{url.group(2)}", timeout=10).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert got["name"] == "j/r" and got["trials"] == []
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
