"""A sweep on one real GPU against the bare limit: how fast `gpus: 0.25` trials go, and what memory each takes.

Three parts, on the same synthetic data at SST-5 size (8,544 train / 1,101 dev rows of random words, five
classes, a few cue words per class so that the metric moves):

* **bare, one process**: plain PyTorch (transformers' ``LlamaModel`` of the LLaMA-42M shape, dim 512, 8 layers,
  8 heads, vocab 32,000, + a linear head; AdamW), random token batches of the sweep's batch size and length,
  timed for ``--bare-seconds`` after a warm-up: samples/s;
* **bare, four processes** sharing the device, started together: their samples/s summed;
* **the sweep**: 32 trials of ``random:llama42m`` fine-tuning, ASHA (max_t 4, grace 1, reduction 2), random
  search over lr / dropout / weight decay, ``resources: {gpus: 0.25}`` (four trials on the device at once), on
  the embedded local Ray. Only the sweep itself runs (plan, trials, record), not the finish (no evaluation,
  report or importance: those need plotly and Optuna, which a bare GPU box lacks).

Printed: the bare figures, the sweep's wall time (``Tuner.fit``), its samples/s (train rows of every epoch
trained, over that wall time) against the bare figures, and each trial's epochs, best val macro-F1 and peak
memory (the record's ``peak_mem_mb``, the max over its epochs; ``-`` where the record has no such column).
Last line: ``gpu_sweep: wall_s=.. samples_per_s=.. bare_one=.. bare_four=.. peak_mem_mb=..`` (peak_mem_mb:
the largest trial's). For reference, on one H100 with plain PyTorch this shape trained 3.2k samples/s in one
process and 8.8k in four; four Ray Tune function trials at ``gpu: 0.25`` reached 6.0k together. It takes
about 4 minutes on one H100 (at most 8).

It runs from a plain checkout on a machine with Python 3.12 and PyTorch (+ transformers, pandas, pyarrow, numpy,
scikit-learn, PyYAML, requests: what the GPU image has) but no Ray: pack Ray and what else it lacks first, here,
from the project root (``../shared/tools/ray-for-gpu-box`` writes ``.gpu-carry/``, git-ignored), then on the GPU
machine (the device tool: ``run`` with ``carry: [".gpu-carry"]``, ``timeout_s: 600``) run exactly:

    bash .gpu-carry/install.sh && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 python3 bench/gpu_sweep.py

    python bench/gpu_sweep.py --smoke   # on a CPU: tiny shape, 4 trials, a node claiming one logical GPU
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

SHAPES = {  # the random: presets of sentune/trainables/_backbone_names.py
    "llama42m": dict(dim=512, layers=8, heads=8, vocab=32000, hidden=1376),
    "tiny": dict(dim=64, layers=2, heads=4, vocab=2000, hidden=256),
}
FULL = dict(shape="llama42m", rows=(8544, 1101), words=30000, max_len=64, batch=64, trials=32, epochs=4,
            bare_seconds=20.0, warmup_steps=10)  # fmt: skip
SMOKE = dict(shape="tiny", rows=(160, 40), words=300, max_len=24, batch=16, trials=4, epochs=2, bare_seconds=1.5,
             warmup_steps=2)  # fmt: skip


# ---- data ------------------------------------------------------------------------------------------------


def write_data(root: Path, rows: tuple[int, int], words: int, max_len: int, seed: int = 0) -> dict:
    """SST-format files of random words (Zipf-like frequencies), five classes, two cue words per class mixed in."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(words)]
    weights = [1.0 / (i + 10) for i in range(words)]
    cues = [[f"cue{c}a", f"cue{c}b"] for c in range(5)]
    paths = {}
    for name, n in zip(("train", "dev"), rows):
        lines = []
        for i in range(n):
            label = i % 5
            text = rng.choices(vocab, weights, k=rng.randint(8, max_len - 4))
            for _ in range(2):
                text.insert(rng.randrange(len(text) + 1), rng.choice(cues[label]))
            lines.append(f"{label} ||| {' '.join(text)}\n")
        rng.shuffle(lines)
        path = root / f"{name}.txt"
        path.write_text("".join(lines), encoding="utf-8")
        paths[name] = str(path)
    return paths


# ---- the bare limit ---------------------------------------------------------------------------------------


def _bare_worker(shape: dict, batch: int, seq: int, seconds: float, warmup: int, start, out) -> None:
    """One process: the shape's LlamaModel + head trained on random batches for ``seconds``; puts (samples/s,
    peak MB, the device's name)."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["dim"], intermediate_size=shape["hidden"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape["heads"], max_position_embeddings=max(seq, 128))  # fmt: skip
    decoder, head = LlamaModel(cfg).to(device), torch.nn.Linear(shape["dim"], 5).to(device)
    opt = torch.optim.AdamW([*decoder.parameters(), *head.parameters()], lr=1e-4)

    def step() -> None:
        ids = torch.randint(0, shape["vocab"], (batch, seq), device=device)
        lengths = torch.randint(seq // 4, seq + 1, (batch,), device=device)
        mask = (torch.arange(seq, device=device)[None, :] < lengths[:, None]).long()
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(batch, device=device), lengths - 1]
        loss = torch.nn.functional.cross_entropy(head(last).float(), torch.randint(0, 5, (batch,), device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start.wait()
    t0, samples = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        samples += batch
        if cuda and samples % (batch * 8) == 0:
            torch.cuda.synchronize()
    if cuda:
        torch.cuda.synchronize()
    took = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    out.put((samples / took, peak, torch.cuda.get_device_name() if cuda else "CPU"))


def bare(processes: int, cfg: dict, *, threads: bool = False) -> tuple[float, float, str]:
    """Samples/s summed over ``processes`` processes training at once, their largest peak memory (MB) and the
    device's name. ``threads``: threads of this process instead (the smoke run: torch is imported once)."""
    if threads:
        import queue
        import threading

        import transformers  # noqa: F401 (imported once here, not by four threads at the same time)
        from transformers import LlamaConfig, LlamaModel  # noqa: F401

        start, out, make = threading.Barrier(processes), queue.Queue(), threading.Thread
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # the parent never touches CUDA: the sweep's trials get the whole device
        start, out, make = ctx.Barrier(processes), ctx.Queue(), ctx.Process  # type: ignore[assignment]
    args = (SHAPES[cfg["shape"]], cfg["batch"], cfg["max_len"], cfg["bare_seconds"], cfg["warmup_steps"], start, out)
    procs = [make(target=_bare_worker, args=args) for _ in range(processes)]
    for p in procs:
        p.start()
    got = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(r for r, _, _ in got), max(m for _, m, _ in got), got[0][2]


# ---- the sweep ------------------------------------------------------------------------------------------


def sweep_job(data: dict, root: Path, cfg: dict, cpus: float) -> dict:
    return {
        "name": "gpu_sweep",
        "trainable": "llama_torch",
        "data": data,
        "search_space": {
            "lr": {"loguniform": [3.0e-5, 3.0e-3]},
            "hidden_dropout": {"uniform": [0.0, 0.3]},
            "weight_decay": {"loguniform": [1.0e-4, 1.0e-1]},
        },  # fmt: skip
        "params": {
            "backbone": f"random:{cfg['shape']}",
            "option": "finetune",
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch"],
            "max_len": cfg["max_len"],
            "seed": 0,
        },  # fmt: skip
        "search": {"algorithm": "random"},
        "scheduler": {
            "type": "asha",
            "metric": "val_macro_f1",
            "mode": "max",
            "max_t": cfg["epochs"],
            "grace_period": 1,
            "reduction_factor": 2,
        },  # fmt: skip
        "num_samples": cfg["trials"],
        "resources": {"cpus": cpus, "gpus": 0.25, "workers_per_trial": 1},
        "storage_path": str(root / "results"),
        "reference": False,
        "seed": 0,
    }


def run_sweep_only(spec) -> tuple[float, object]:
    """The sweep's plan, pieces and ``Tuner.fit`` (no finish); returns (its wall seconds, the run folder)."""
    from sentune.tuning._plan import make_plan
    from sentune.tuning._run_folder import RunFolder
    from sentune.tuning._sweep import _build, _fit

    plan = make_plan(spec, RunFolder.new(spec), address=None, verbose=False)
    try:
        sweep = _build(plan, "quiet")
        t0 = time.perf_counter()
        _fit(plan, sweep)
        return time.perf_counter() - t0, plan.run_dir
    finally:
        if plan.evaluator is not None:  # the plan's, started with the data's preparation
            plan.evaluator.stop()
        plan.folder.close()


def trial_table(epochs):
    """Per trial: epochs trained, best val macro-F1, peak memory (MB; None without the record's column)."""
    has_peak = "peak_mem_mb" in epochs.columns
    rows = []
    for tid, g in epochs.groupby("trial_id"):
        peak = float(g.peak_mem_mb.max()) if has_peak and g.peak_mem_mb.notna().any() else None
        rows.append((tid, int(g.epoch.max()), float(g.val_macro_f1.max()), peak))
    return rows


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shape, 4 trials, on a CPU (a logical GPU)")
    ap.add_argument("--bare-seconds", type=float, default=None, help="how long each bare run trains")
    args = ap.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.bare_seconds:
        cfg["bare_seconds"] = args.bare_seconds
    import pandas as pd
    import torch

    from sentune.spec import parse_job
    from sentune.tuning import init_ray

    t_all = time.perf_counter()
    cuda = torch.cuda.is_available()  # no CUDA context in this process: the trials' processes get the device
    print(f"shape {cfg['shape']} {SHAPES[cfg['shape']]}, batch {cfg['batch']} x {cfg['max_len']} tokens")
    bare_one, peak_one, device = bare(1, cfg, threads=args.smoke)
    print(f"device: {device}" + ("" if cuda else " (the sweep's node claims one logical GPU)"))
    print(f"bare, one process: {bare_one:.0f} samples/s (peak {peak_one:.0f} MB)")
    bare_four, peak_four, _ = bare(4, cfg, threads=args.smoke)
    print(f"bare, four processes sharing the device: {bare_four:.0f} samples/s together (peak {peak_four:.0f} MB each)")

    with tempfile.TemporaryDirectory(prefix="gpu-sweep-") as tmp:
        root = Path(tmp)
        data = write_data(root, cfg["rows"], cfg["words"], cfg["max_len"])
        cpus = 0.5 if args.smoke else max(1, (os.cpu_count() or 4) // 4 - 1)
        # on a CPU the embedded Ray claims one GPU it does not have: trials take their quarter, train on the CPU
        init_ray(num_cpus=2 if args.smoke else None, num_gpus=None if cuda else 1)
        spec = parse_job(sweep_job(data, root, cfg, cpus))
        wall, run_dir = run_sweep_only(spec)
        epochs = pd.read_parquet(Path(run_dir) / "epochs.parquet")
    import ray

    ray.shutdown()
    trained = float((epochs.samples_per_second * epochs.epoch_seconds).sum())
    rate = trained / wall
    table = trial_table(epochs)
    print(f"sweep: {len(table)} trials, {len(epochs)} epochs, {wall:.1f} s (Tuner.fit), {rate:.0f} samples/s "
          f"= {rate / bare_one:.2f}x one bare process, {rate / bare_four:.2f}x four")  # fmt: skip
    print(f"{'trial':<24} {'epochs':>6} {'best_f1':>8} {'peak_mem_mb':>12}")
    for tid, n, best, peak in table:
        print(f"{tid:<24} {n:>6} {best:>8.3f} {_fmt(peak):>12}")
    peaks = [p for *_, p in table if p is not None]
    if not peaks:
        print("(the record has no peak_mem_mb column: the device bookkeeping of issue 22, item 1, writes it)")
    peak = max(peaks) if peaks else float("nan")
    print(f"whole script: {time.perf_counter() - t_all:.1f} s")
    print(f"gpu_sweep: wall_s={wall:.1f} samples_per_s={rate:.0f} bare_one={bare_one:.0f} bare_four={bare_four:.0f} "
          f"peak_mem_mb={_fmt(peak)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
