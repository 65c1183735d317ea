"""Devices and memory in the record (issue 22, items 1 and 3): each epoch's GPU ids, nodes and peak memory,
each trial's peak, the ``gpus:`` share that fits it; ``precision`` for llama_torch, a no-op on the CPU.
Fast tests run the real loop without Ray; the slow ones a real sweep."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_job
from sentune import results
from sentune.data import DataConfig, load_splits
from sentune.results import RunRecorder, write_run_info
from sentune.results._format import GPU_FRACTIONS, suggest_gpu_fraction
from sentune.trainables import llama_torch as lt
from sentune.trainables._device import gather_devices, gather_memory, process_peak_rss_mb

NODE_A, NODE_B = "ab" * 28, "0f" * 28  # Ray node ids: 28 bytes as hex


# ---- the gpus: share that fits the peak ----


@pytest.mark.parametrize(
    ("peak", "device", "want"),
    [
        (2_000, 81_559, 0.0625),  # 3,012 MiB with headroom: sixteen on an 80 GB device
        (9_000, 81_559, 0.2),  # 11,762 MiB: not 0.125 (10,195 MiB), 0.2 (16,312 MiB)
        (30_000, 81_559, 0.5),
        (62_000, 81_559, 1.0),
        (70_000, 81_559, None),  # 88,012 MiB with headroom: not even a whole device
        (2_000, 16_000, 0.2),  # 3,012 MiB: 0.2 of 16,000 MiB is 3,200, 0.125 only 2,000
    ],
)
def test_the_suggested_share_is_the_smallest_that_holds_the_peak_with_headroom(peak, device, want):
    assert suggest_gpu_fraction(peak, device) == want
    if want is not None:  # and the next smaller share would not hold it
        smaller = [f for f in GPU_FRACTIONS if f < want]
        assert not smaller or max(smaller) * device < peak * 1.25 + 512


def recorded_run(run: Path, *, gpu: bool, peaks=(1_500.0, 2_600.0)) -> Path:
    """A finished run folder whose trials reported memory (on a GPU: with the device's size)."""
    write_run_info(run, {"job": "j", "run_id": "r", "trainable": "llama_torch", "metric": "val_macro_f1",
                         "mode": "max", "label_names": ["neg", "pos"], "tuned_params": ["lr"], "data": {},
                         "spec": {"resources": {"gpus": 0.5 if gpu else 0}}})  # fmt: skip
    rec = RunRecorder(run, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=2, flush_every_s=0)
    for t, peak in enumerate(peaks):
        config = {"lr": 10.0 ** -(t + 2), "epochs": 2}
        rec.trial(f"t{t}", config)
        for e in (1, 2):
            memory = {"peak_mem_mb": peak * e / 2, **({"device_mem_mb": 40_960.0} if gpu else {})}
            rec.result(f"t{t}", config, {"epoch": e, "time_this_iter_s": 1.0, "val_macro_f1": 0.5 + 0.1 * e,
                                         "train_loss": 1.0, "val_loss": 1.0, "train_acc": 0.5, "val_acc": 0.5,
                                         "gpu_ids": [t] if gpu else [], **memory})  # fmt: skip
        rec.completed(f"t{t}", config)
    rec.close()
    return run


def test_the_trial_table_keeps_each_trials_peak_and_the_line_suggests_a_share(tmp_path):
    run = recorded_run(tmp_path / "gpu", gpu=True)
    trials = results.read_trials(run).set_index("trial_id")
    assert trials.peak_mem_mb.to_dict() == {"t0": 1_500.0, "t1": 2_600.0}  # the max over its epochs
    assert (trials.device_mem_mb == 40_960.0).all()
    epochs = results.read_epochs(run)
    assert sorted(json.loads(v) for v in epochs.gpu_ids) == [[0], [0], [1], [1]]
    line = results.gpu_fraction_line(run)
    # 2,600 x 1.25 + 512 = 3,762 MiB: 0.1 of 40,960 MiB is 4,096, 0.0625 only 2,560
    assert line.startswith("GPU memory: the largest trial peaked at 2,600 MiB a worker (of 2 trials on GPUs)")
    assert "gpus: 0.1 fits by memory (10 per device" in line and line.endswith("this run used gpus: 0.5")
    page = results.write_report(run).read_text()
    assert 'id="gpu-fraction">GPU memory: the largest trial peaked at 2,600 MiB' in page


def test_a_cpu_run_suggests_nothing(tmp_path):
    run = recorded_run(tmp_path / "cpu", gpu=False)
    assert results.read_trials(run).peak_mem_mb.tolist() == [1_500.0, 2_600.0]
    assert results.gpu_fraction_line(run) == ""
    assert 'id="gpu-fraction"' not in results.write_report(run).read_text()


# ---- the device columns gathered over the workers ----


def two_workers(gather, local: list) -> list:
    """``gather(reduce, world, rank, *local[rank])`` on two workers whose sum over the workers is real: each
    worker's own vector first, then every worker's result with the sum of both."""
    mine = []
    for rank in (0, 1):
        gather(lambda v: mine.append(v) or v, 2, rank, *local[rank])
    total = mine[0] + mine[1]
    return [gather(lambda v: total, 2, rank, *local[rank]) for rank in (0, 1)]


def test_every_workers_gpu_ids_and_node_reach_every_worker_in_rank_order():
    got = two_workers(gather_devices, [([1], NODE_A), ([0, 3], NODE_B)])
    assert got[0] == got[1] == ([1, 0, 3], [NODE_A, NODE_B])
    # one worker: no sum; a worker on the CPU (no ids) outside Ray (no node)
    assert gather_devices(lambda v: 1 / 0, 1, 0, [], None) == ([], [None])
    assert gather_devices(lambda v: 1 / 0, 1, 0, [7], "not-hex") == ([7], [None])


def test_the_largest_peak_and_the_smallest_device_of_the_workers():
    got = two_workers(gather_memory, [(1_000.0, 81_559.0), (1_700.5, 40_960.0)])
    assert got[0] == got[1] == (1_700.5, 40_960.0)
    assert two_workers(gather_memory, [(900.0, None), (800.0, None)])[0] == (900.0, None)  # on the CPU


# ---- llama_torch's precision on the CPU ----


@pytest.fixture(scope="module")
def splits(sst_dir):
    return load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt", test=sst_dir / "test.txt"))


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture()
def sentune_lines():
    handler, logger = Lines(), logging.getLogger("sentune")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def params(**kw):
    base = dict(backbone="random:tiny", option="finetune", epochs=2, lr=3e-3, batch_size=16, max_len=24, seed=3)
    return lt.LlamaTorchParams(**{**base, **kw})


KEYS = ["train_loss", "val_loss", "val_macro_f1", "grad_norm", "train_acc"]


def test_precision_is_a_no_op_on_the_cpu_with_one_line_and_fp32_is_unchanged(splits, sentune_lines):
    data = lt.prepare(params(), splits)
    fp32 = lt.fit(params(), data)
    assert not [line for line in sentune_lines if "precision" in line]  # fp32: nothing to say
    for precision in ("bf16", "fp16"):
        sentune_lines.clear()
        half = lt.fit(params(precision=precision), data)
        notes = [line for line in sentune_lines if "precision" in line]
        assert notes == [f"precision {precision}: a no-op on the CPU (as are TF32 and pinned memory); training in fp32"]
        assert [[h[k] for k in KEYS] for h in half.history] == [[h[k] for k in KEYS] for h in fp32.history]
    assert fp32.best_metric > 0.9  # it trains
    for row in fp32.history:  # outside Ray: no GPU ids, no node; the process's peak RSS
        assert row["gpu_ids"] == [] and "worker_node_ids" not in row and "device_mem_mb" not in row
        assert 0 < row["peak_mem_mb"] <= process_peak_rss_mb()


def test_an_fp16_train_state_keeps_its_grad_scaler_through_the_resume_store(splits, tmp_path):
    import torch

    from sentune.trainables._resume import ResumeState, ResumeStore

    p = params(precision="fp16", epochs=1)
    hooks = lt.TRAINABLE.hooks(p, lt.prepare(p, splits), lt.LoopContext())
    state = hooks.train_state()
    assert "scaler" not in state  # on the CPU fp16 is fp32: no scaler, the state as it always was
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=7)
    scaler.scale(torch.tensor(1.0))  # its scale is made at the first loss it scales
    scaler.update(new_scale=512.0)  # a scale that moved, as after overflowed steps
    state["scaler"] = scaler.state_dict()
    store = ResumeStore(str(tmp_path / "resume"))
    store.save_state(ResumeState(epoch=2, pos=0, step=3, partial=None, history=[], best_value=None,
                                 best_epoch=0, best_state=None, train=state), rank=0, barrier=lambda: None)  # fmt: skip
    saved = store.load_state(0)
    assert saved is not None
    again = torch.amp.GradScaler("cpu")
    again.load_state_dict(saved.train["scaler"])
    assert again.get_scale() == 512.0 and again.get_growth_interval() == 7
    hooks.load_train_state(saved.train)  # a run without a scaler takes the state all the same


# ---- a real sweep ----


@pytest.mark.slow
def test_a_sweeps_record_has_the_device_and_memory_columns(tiny_sweep):
    run = tiny_sweep.run_dir
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert (epochs.gpu_ids.map(json.loads).map(list) == [[]] * len(epochs)).all()  # the CPU: no GPU ids
    assert (epochs.worker_node_ids == epochs.node_id).all()  # one worker: rank 0's node
    assert (epochs.peak_mem_mb > 50).all() and "device_mem_mb" not in epochs
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    peaks = epochs.groupby("trial_id").peak_mem_mb.max()
    assert trials.peak_mem_mb.to_dict() == peaks.to_dict() and trials.device_mem_mb.isna().all()
    shown = subprocess.run([sys.executable, "-m", "sentune.cli", "results", str(run)], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "GPU memory" not in shown  # a CPU run: no gpus: share to suggest


@pytest.mark.slow
def test_a_worker_groups_rows_name_every_workers_node(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    spec = make_job(sst_dir, tmp_path, name="pair", search_space={}, search={"algorithm": "random"}, num_samples=1,
                    scheduler={"type": "fifo"}, resources={"cpus": 1, "workers_per_trial": 2},
                    params={"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 8,
                            "max_len": 24, "lr": 3.0e-3})  # fmt: skip
    epochs = pd.read_parquet(run_sweep(spec).run_dir / "epochs.parquet")
    assert len(epochs) == 1
    nodes = epochs.worker_node_ids.iloc[0].split(",")
    assert nodes == [epochs.node_id.iloc[0]] * 2  # both workers on the one local node, rank 0's first
    assert json.loads(epochs.gpu_ids.iloc[0]) == [] and epochs.peak_mem_mb.iloc[0] > 50
    assert np.isfinite(epochs.val_loss.iloc[0])
