"""The run record as it is written: parts appended, merged, compacted, resumed (pure Python, no Ray)."""

import math
import subprocess
import sys

import pandas as pd
import pyarrow.dataset as ds
import pytest

from sentune.diagnostics import DiagnosticsConfig, DiagnosticsTracker
from sentune.errors import SentuneError
from sentune.results import RunRecorder, leaderboard, read_epochs, read_trials, write_run_info
from sentune.results._recorder import MERGE_FANOUT
from sentune.results._store import list_parts, write_parquet
from sentune.results._tables import keep_mask

NAMES = ["neg", "pos"]
CONFIG = {"lr": 0.01, "epochs": 6, "hidden": 32}


def metrics(trial: int, epoch: int, **kw) -> dict:
    """A result as a trainable reports it (what Tune adds included)."""
    m = {
        "epoch": epoch,
        "training_iteration": epoch,
        "time_total_s": 1.5 * epoch,
        "train_loss": 1.0 / epoch,
        "val_loss": 1.1 / epoch + 0.01 * trial,
        "train_acc": 0.5 + 0.05 * epoch,
        "val_acc": 0.5 + 0.04 * epoch - 0.01 * trial,
        "val_macro_f1": round(0.55 + (0.1 if epoch == 3 else 0.0) - 0.02 * trial, 6),  # peaks at epoch 3
        "grad_norm": 1.0 + 0.1 * epoch,
        "val_pred_count/neg": 95 if trial == 1 and epoch >= 2 else 40 + epoch,  # t1 collapses from epoch 2
        "val_pred_count/pos": 5 if trial == 1 and epoch >= 2 else 60 - epoch,
    }
    m.update(kw)
    return m


def recorder(run_dir, **kw) -> RunRecorder:
    kw.setdefault("flush_every_s", 0.0)  # every result is written: the worst case for parts
    return RunRecorder(run_dir, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6, **kw)


def tracker() -> DiagnosticsTracker:
    return DiagnosticsTracker(DiagnosticsConfig(stagnation_epochs=2), [50, 50], NAMES)


def feed(rec: RunRecorder, trials=range(3), epochs=range(1, 7)):
    for e in epochs:
        for t in trials:
            rec.trial(f"t{t}", CONFIG)
            rec.result(f"t{t}", CONFIG, metrics(t, e))


def key_rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(zip(df.trial_id, df.epoch, df.val_macro_f1))


def test_rows_go_to_parts_then_compact_to_one_and_read_back_the_same(tmp_path):
    rec = recorder(tmp_path, tracker=tracker())
    feed(rec)
    parts = list_parts(tmp_path / "epochs.parquet")
    assert 1 < len(parts) < 3 * 6  # appended, and merged as they piled up
    during = read_epochs(tmp_path)
    assert len(during) == 18 and not during.duplicated(["trial_id", "epoch"]).any()
    assert set(during.trial_status) == {"running"}
    for t in ("t0", "t1", "t2"):
        rec.completed(t, CONFIG)
    assert set(read_epochs(tmp_path).trial_status) == {"completed"}  # read_epochs takes it from trials.parquet
    rec.close()
    files = sorted(p.name for p in (tmp_path / "epochs.parquet").iterdir())
    assert len(files) == 1 and files[0].startswith("part-")  # one part, no schema part
    after = read_epochs(tmp_path)
    assert key_rows(after) == key_rows(during)
    plain = pd.read_parquet(tmp_path / "epochs.parquet")
    assert len(plain) == 18 and not plain.duplicated(["trial_id", "epoch"]).any()
    assert set(plain.trial_status) == {"completed"}
    # rows by trial, then epoch (as the single-file record had them)
    assert list(zip(after.trial_id, after.epoch)) == [(f"t{t}", e) for t in range(3) for e in range(1, 7)]
    for col in ("config/lr", "config/hidden", "diag_collapse", "diag_overfit", "reported_at", "time_total_s"):
        assert col in after.columns, col
    trials = read_trials(tmp_path).set_index("trial_id")
    assert trials.loc["t0", "peak_metric"] == pytest.approx(0.65) and trials.loc["t0", "peak_epoch"] == 3
    rec.close()  # again: nothing to do
    assert sorted(p.name for p in (tmp_path / "epochs.parquet").iterdir()) == files


def test_close_writes_what_the_flush_interval_held_back(tmp_path):
    rec = recorder(tmp_path, flush_every_s=3600)  # nothing written mid-run but the first result
    feed(rec, trials=[0], epochs=range(1, 4))
    assert pd.read_parquet(tmp_path / "epochs.parquet").epoch.tolist() == [1]
    rec.close()  # what the Tune callback's on_experiment_end calls
    assert len(list_parts(tmp_path / "epochs.parquet")) == 1
    assert pd.read_parquet(tmp_path / "epochs.parquet").epoch.tolist() == [1, 2, 3]


def test_a_re_reported_epoch_replaces_the_old_rows(tmp_path):
    rec = recorder(tmp_path)
    for e in range(1, 6):
        rec.result("a", CONFIG, metrics(0, e))
    rec.result("b", CONFIG, metrics(1, 1))
    # retried after a failure: the trial starts over from epoch 3 (its rows for 3, 4 and 5 are void)
    rec.result("a", CONFIG, metrics(0, 3, val_macro_f1=0.99))
    mid = read_epochs(tmp_path)
    assert mid[mid.trial_id == "a"].epoch.tolist() == [1, 2, 3]
    assert mid[(mid.trial_id == "a") & (mid.epoch == 3)].val_macro_f1.item() == 0.99
    plain = pd.read_parquet(tmp_path / "epochs.parquet")  # a plain reader sees every row written, with _seq
    assert len(plain) == 7 and plain._seq.is_unique
    assert rec.trials["a"]["epochs_run"] == 3 and rec.trials["a"]["peak_metric"] == 0.99
    rec.result("a", CONFIG, metrics(0, 4))
    rec.close()
    after = pd.read_parquet(tmp_path / "epochs.parquet")
    assert sorted(zip(after.trial_id, after.epoch)) == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)]
    assert key_rows(read_epochs(tmp_path)) == key_rows(after)


def test_keep_mask_last_written_wins_and_voids_later_epochs():
    # trial a: 1 2 3 4, then 2 again (voids 2 3 4), then 3; trial b: 1, then 1 again
    trial = ["a", "a", "a", "a", "b", "a", "b", "a"]
    epoch = [1, 2, 3, 4, 1, 2, 1, 3]
    assert keep_mask(trial, epoch).tolist() == [True, False, False, False, False, True, True, True]
    seqs = [8, 7, 6, 5, 4, 3, 2, 1]  # the same rows, stored in the other order
    rev = keep_mask(trial[::-1], epoch[::-1], seqs)
    assert rev.tolist() == [True, True, True, False, False, False, False, True]


def test_a_checkpoint_that_comes_after_its_row_was_written(tmp_path):
    rec = recorder(tmp_path)
    rec.result("a", CONFIG, metrics(0, 1))
    rec.checkpoint("a", "/ckpt/a/1")
    rec.result("a", CONFIG, metrics(0, 2))
    epochs = read_epochs(tmp_path)
    assert epochs.epoch.tolist() == [1, 2] and epochs.checkpoint_path.tolist()[0] == "/ckpt/a/1"
    assert read_trials(tmp_path).checkpoint_path.tolist() == ["/ckpt/a/1"]
    rec.close()
    assert pd.read_parquet(tmp_path / "epochs.parquet").checkpoint_path.tolist()[0] == "/ckpt/a/1"


def test_plain_readers_work_mid_run_when_columns_come_and_types_change(tmp_path):
    rec = recorder(tmp_path)
    rec.result("a", CONFIG, metrics(0, 1, grad_norm=None, note=None, count=3))
    rec.result("a", CONFIG, metrics(0, 2, grad_norm=2.5, note="warm", count=3.5, late=1))
    rec.result("b", {**CONFIG, "focal_alpha": [0.25, 0.75]}, metrics(1, 1, note=7, late=True))
    for read in (
        lambda: pd.read_parquet(tmp_path / "epochs.parquet"),
        lambda: ds.dataset(tmp_path / "epochs.parquet").to_table().to_pandas(),
        lambda: read_epochs(tmp_path),
    ):
        df = read().set_index(["trial_id", "epoch"]).sort_index()
        assert len(df) == 3
        assert df.grad_norm.isna().tolist() == [True, False, False]
        assert df["count"].tolist()[:2] == [3.0, 3.5] and math.isnan(df["count"].tolist()[2])
        assert df.note.tolist()[1:] == ["warm", "7"]  # text and a number: stored as text
        assert df["config/focal_alpha"].tolist()[2] == "[0.25, 0.75]"
        assert "late" in df.columns
    # and without sentune
    code = (
        "import sys, pandas as pd; e = pd.read_parquet(sys.argv[1] + '/epochs.parquet'); "
        "assert 'sentune' not in sys.modules; print(len(e))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_many_writes_keep_few_parts(tmp_path):
    rec = recorder(tmp_path)
    n = MERGE_FANOUT**3 + 5
    for e in range(1, n + 1):
        rec.result("a", CONFIG, metrics(0, e))
    parts = list_parts(tmp_path / "epochs.parquet")
    assert len(parts) <= 4 * (MERGE_FANOUT - 1)
    assert parts[-1][0] > n  # numbers only grow
    assert read_epochs(tmp_path).epoch.tolist() == list(range(1, n + 1))
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == n  # merged parts hold each row once


def test_a_resumed_recorder_continues_the_record(tmp_path):
    straight_tracker = tracker()
    straight = recorder(tmp_path / "straight", tracker=straight_tracker)
    feed(straight, epochs=range(1, 7))
    first = recorder(tmp_path / "run", tracker=tracker())
    feed(first, epochs=range(1, 4))
    first.checkpoint("t1", "/ckpt/t1/3")
    first.completed("t2", {**CONFIG, "epochs": 3})
    last_part = list_parts(tmp_path / "run" / "epochs.parquet")[-1][0]
    del first  # the driver died: nothing was compacted

    resumed_tracker = tracker()
    rec = RunRecorder.resume(
        tmp_path / "run",
        job="j",
        run_id="r",
        metric="val_macro_f1",
        mode="max",
        max_epochs=6,
        tracker=resumed_tracker,
        flush_every_s=0.0,
    )
    assert {t: [r["epoch"] for r in rows] for t, rows in rec.rows.items()} == {f"t{t}": [1, 2, 3] for t in range(3)}
    assert rec.trials["t0"]["status"] == "running" and rec.trials["t2"]["status"] == "completed"
    assert rec.trials["t1"]["checkpoint_path"] == "/ckpt/t1/3"
    assert min(n for n, _ in list_parts(tmp_path / "run" / "epochs.parquet")) > last_part  # numbering goes on
    # the tracker is where it was: a collapse run, the history for stagnation and over-fit, the grad norms
    for t, collapse_run in (("t0", 0), ("t1", 2)):
        ours, theirs = resumed_tracker._trials[t], straight_tracker._trials[t]
        assert ours.collapse_run == collapse_run and len(ours.history) == 3
        assert ours.grad_norms == theirs.grad_norms[:3]
    feed(rec, trials=[0, 1], epochs=range(3, 7))  # Tune restores t0 and t1 from epoch 2's checkpoint
    for t in ("t0", "t1"):  # and every epoch's flags are as if nothing had happened
        for e in range(1, 7):
            assert resumed_tracker._flags[(t, e)] == straight_tracker._flags[(t, e)], (t, e)
    assert resumed_tracker._trials["t1"].collapse_run == straight_tracker._trials["t1"].collapse_run == 5
    rec.close()
    epochs = pd.read_parquet(tmp_path / "run" / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(zip(epochs.trial_id, epochs.epoch)) == sorted(
        [(f"t{t}", e) for t in (0, 1) for e in range(1, 7)] + [("t2", e) for e in (1, 2, 3)]
    )
    assert epochs._seq.is_unique
    assert rec.trials["t0"]["peak_metric"] == pytest.approx(0.65) and rec.trials["t0"]["peak_epoch"] == 3
    assert rec.trials["t0"]["epochs_run"] == 6
    trials = read_trials(tmp_path / "run").set_index("trial_id")
    assert trials.loc["t1", "peak_metric"] == pytest.approx(0.63) and trials.loc["t2", "status"] == "completed"
    write_run_info(tmp_path / "run", {"metric": "val_macro_f1", "mode": "max", "tuned_params": []})
    assert leaderboard(tmp_path / "run").trial_id.tolist() == ["t0", "t1", "t2"]


def test_resume_after_a_compacted_run_and_with_no_record(tmp_path):
    rec = recorder(tmp_path)
    feed(rec, trials=[0], epochs=range(1, 3))
    rec.close()
    again = RunRecorder.resume(tmp_path, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6)
    again.result("t0", CONFIG, metrics(0, 3))
    again.close()
    assert pd.read_parquet(tmp_path / "epochs.parquet").epoch.tolist() == [1, 2, 3]
    empty = RunRecorder(tmp_path / "new", job="j", run_id="r", metric="m", mode="max", max_epochs=1, resume=True)
    assert empty.rows == {} and empty.trials == {}


def old_single_file_run(run_dir):
    """A run folder whose epochs.parquet is one Parquet file (not a folder of parts)."""
    rows = [
        {
            "job": "j",
            "run": "r",
            "trial_id": t,
            "epoch": e,
            "config/lr": 0.01,
            **metrics(i, e),
            "trial_status": "running",
        }
        for i, t in enumerate(["t0", "t1"])
        for e in (1, 2)
    ]
    for r in rows:
        del r["training_iteration"]
    rows[1]["val_loss"] = math.nan  # pandas stores it as null
    write_parquet(run_dir / "epochs.parquet", rows)
    write_parquet(
        run_dir / "trials.parquet",
        [
            {
                "trial_id": t,
                "status": "running",
                "epochs_run": 2,
                "epochs_max": 6,
                "peak_metric": None,
                "peak_epoch": None,
                "checkpoint_path": None,
                "config_json": '{"lr": 0.01}',
                "config/lr": 0.01,
            }
            for t in ("t0", "t1")
        ],
    )
    return run_dir


def test_a_single_file_record_reads_but_is_not_resumed(tmp_path):
    run = old_single_file_run(tmp_path)
    assert (run / "epochs.parquet").is_file()
    old = read_epochs(run)
    assert len(old) == 4 and list(old.columns) == list(pd.read_parquet(run / "epochs.parquet").columns)
    write_run_info(run, {"metric": "val_macro_f1", "mode": "max", "tuned_params": ["lr"]})
    assert len(leaderboard(run)) == 2
    with pytest.raises(SentuneError, match="single-file epoch record") as refused:
        RunRecorder.resume(run, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6)
    assert "\n" not in str(refused.value)
    assert (run / "epochs.parquet").is_file() and len(read_epochs(run)) == 4  # left as it was


def test_a_nan_loss_is_a_nan_loss_again_after_a_resume(tmp_path):
    first = recorder(tmp_path, tracker=tracker())
    first.result("t0", CONFIG, metrics(0, 1))
    first.result("t0", CONFIG, metrics(0, 2, val_loss=math.nan))
    resumed = RunRecorder.resume(
        tmp_path, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6, tracker=tracker()
    )
    assert math.isnan(resumed.tracker._trials["t0"].history[1]["val_loss"])  # type: ignore[union-attr]
    assert math.isnan(resumed.rows_of("t0")[1]["val_loss"])


def test_a_single_file_record_set_aside_reads_but_is_not_resumed(tmp_path):
    run = old_single_file_run(tmp_path)
    (run / "epochs.parquet").rename(run / ".epochs.parquet.old")
    assert len(read_epochs(run)) == 4
    with pytest.raises(SentuneError, match="single-file epoch record"):
        RunRecorder.resume(run, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6)


def test_a_fresh_recorder_replaces_a_record_left_in_its_folder(tmp_path):
    old_single_file_run(tmp_path)
    rec = recorder(tmp_path)
    rec.result("n", CONFIG, metrics(0, 1))
    assert read_epochs(tmp_path).trial_id.tolist() == ["n"]


def test_a_parts_folder_goes_up_and_comes_back_through_a_uri(tmp_path, monkeypatch):
    from sentune.results import resolve_run_dir, upload_run

    monkeypatch.setenv("SENTUNE_HOME", str(tmp_path / "home"))

    run = tmp_path / "run"
    write_run_info(run, {"job": "j", "run_id": "r", "metric": "val_macro_f1", "mode": "max", "tuned_params": []})
    rec = recorder(run)
    feed(rec, trials=[0, 1], epochs=range(1, 4))
    rec.result("t0", CONFIG, metrics(0, 2, val_macro_f1=0.9))  # re-reported
    uri = f"file://{tmp_path}/store/j/r"
    upload_run(run, uri)
    mid = resolve_run_dir(uri)
    assert key_rows(read_epochs(mid)) == key_rows(read_epochs(run))
    rec.close()
    upload_run(run, uri)  # the parts merged away since go from the store too
    assert len(list((tmp_path / "store/j/r/epochs.parquet").iterdir())) == 1
    fetched = resolve_run_dir(uri)
    assert fetched == mid and len(list((fetched / "epochs.parquet").iterdir())) == 1
    assert sorted(zip(*[pd.read_parquet(fetched / "epochs.parquet")[c] for c in ("trial_id", "epoch")])) == [
        ("t0", 1),
        ("t0", 2),
        ("t1", 1),
        ("t1", 2),
        ("t1", 3),
    ]


def test_the_questions_a_resume_asks_the_record(tmp_path):
    rec = recorder(tmp_path)
    base = {**CONFIG, "seed": 7}
    rec.trial("b", base, role="baseline", baseline=2)
    rec.result("s", CONFIG, metrics(0, 1))
    rec.result("b", base, metrics(1, 1))
    rec.result("s", CONFIG, metrics(0, 2, val_macro_f1=None))  # no metric: not replayed
    rec.checkpoint("s", "/ckpt/s/2")
    rec.trial("c1", {**base, "seed": 8}, role="confirm", confirm_of="b")
    rec.result("c1", {**base, "seed": 8}, metrics(2, 1))
    rec.trial("c2", {**base, "seed": 9}, role="confirm", confirm_of="b")
    rec.completed("c1", {**base, "seed": 8})
    rec.errored("b", base, "boom")
    assert "s" in rec and "x" not in rec
    assert rec.trial_ids() == ["b", "s", "c1", "c2"]
    assert rec.trial_ids(role="confirm", ended=False) == ["c2"]
    assert rec.ended_trials() == ["b", "c1"] and rec.unended_trials() == ["s", "c2"]
    assert rec.status_of("c1") == "stopped_early" and rec.status_of("b") == "errored" and rec.status_of("x") is None
    assert rec.config_of("b") == base and rec.role_of("s") == "sampled" and rec.role_of("c1") == "confirm"
    assert rec.role_of("x") is None
    assert rec.baseline_numbers() == [2] and rec.confirmed_seeds() == {("b", 8)}
    assert rec.epochs_of("s") == {1, 2} and rec.epochs_of("x") == set()
    assert rec.recorded_epochs() == [("s", 1), ("s", 2), ("b", 1), ("c1", 1)]
    assert [r["epoch"] for r in rec.rows_of("s")] == [1, 2]
    replay = rec.replay_rows()
    assert replay[0] == ("s", 1, metrics(0, 1)["val_macro_f1"])  # the first to arrive
    assert sorted(replay) == sorted([("s", 1, 0.55), ("b", 1, 0.53), ("c1", 1, 0.51)])
    last = rec.last_result("s")
    assert last is not None and last["epoch"] == 2 and last["val_macro_f1"] is None and "checkpoint_path" not in last
    assert not {"job", "run", "trial_id", "_seq", "reported_at", "time_total_s"} & set(last)
    assert not any(k.startswith(("config/", "diag_")) for k in last) and rec.last_result("c2") is None
    # the answers survive a resume
    rec.close()
    again = RunRecorder.resume(tmp_path, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=6)
    assert again.trial_ids() == rec.trial_ids() and again.confirmed_seeds() == {("b", 8)}
    assert again.config_of("c2") == {**base, "seed": 9} and again.baseline_numbers() == [2]
    assert sorted(again.replay_rows()) == sorted(replay)


# ---- background writes (the sweep's driver): the record's files on a thread of their own


def test_a_background_recorder_does_not_wait_for_its_files(tmp_path):
    """A trial's end costs the Tune loop no file write: with the writer busy (held here), ``completed``
    returns at once, and ``sync`` then finds the trial's end on disk."""
    import threading

    rec = recorder(tmp_path, background=True)
    feed(rec, trials=range(1), epochs=range(1, 3))
    rec.sync()
    gate = threading.Event()
    rec._writer.submit(gate.wait)  # a slow disk
    rec.completed("t0", CONFIG)  # would block here if it wrote itself
    assert set(read_trials(tmp_path).status) == {"running"}  # not written yet
    gate.set()
    rec.sync()
    ended = rec.status_of("t0")
    assert ended != "running" and set(read_trials(tmp_path).status) == {ended}
    assert set(read_epochs(tmp_path).trial_status) == {ended}


def test_a_background_record_is_the_one_written_in_place(tmp_path):
    """The same events, written on the writer's thread or in place, make the same files (rows copied when
    due: a row changed after its write was queued does not change what that write holds)."""
    written = {}
    for mode in ("inline", "background"):
        rec = recorder(tmp_path / mode, tracker=tracker(), background=mode == "background")
        feed(rec)
        rec.checkpoint("t1", "/ckpt/t1")
        for t in ("t0", "t1", "t2"):
            rec.completed(t, CONFIG)
        rec.close()
        epochs = read_epochs(tmp_path / mode).drop(columns=["reported_at"])
        trials = read_trials(tmp_path / mode).drop(columns=["started_at", "ended_at"], errors="ignore")
        written[mode] = (epochs, trials)
    pd.testing.assert_frame_equal(written["inline"][0], written["background"][0])
    pd.testing.assert_frame_equal(written["inline"][1], written["background"][1])


def test_a_failed_background_write_is_raised_by_the_next_sync(tmp_path):
    rec = recorder(tmp_path, background=True)
    (tmp_path / "trials.parquet").mkdir()  # trials.parquet cannot be replaced
    feed(rec, trials=range(1), epochs=range(1, 2))
    with pytest.raises(OSError):
        rec.sync()
    rec.sync()  # raised once
