"""What serving a model over HTTP costs: `sentune serve`'s endpoint against the bare model in this process.

A small model (a one-trial sweep of ``llama_torch`` on the random-init ``random:tiny`` backbone over synthetic
movie-review sentences, or ``--model`` a run or model folder of yours) is served on the embedded local Ray
(one replica, the CPUs its job used). Then N concurrent clients (threads, each a ``requests.Session``) send
``POST /predict`` requests of ``--texts-per-request`` texts, at 1, 8 and 32 clients: each level prints the
p50 and p99 latency of a request (ms) and the texts per second. Before Serve starts, the bare model's batched
forward pass (``TextModel.predict_proba``) labels the same texts in this process with as many torch threads
as a replica holds CPUs: its texts per second, and the ratio (bare / served at 32 clients) is the serving
overhead.

    python bench/serve_latency.py [--requests 200] [--texts-per-request 1] [--model RUN_OR_MODEL_DIR]
    python bench/serve_latency.py --smoke     # one epoch of training, 20 requests a level; files removed

Last line: ``serve_latency: p50_1=.. p99_32=.. tps_32=.. bare_tps=.. ratio_32=..``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

CLIENTS = (1, 8, 32)


def train_small_model(tmp: Path, epochs: int) -> Path:
    """A one-trial run of a tiny llama_torch job on synthetic sentences (the tests' data); its folder."""
    from conftest import make_job, synthetic_rows, write_sst_file
    from sentune.tuning import run_sweep

    for name, n, seed in (("train", 240, 1), ("dev", 80, 2), ("test", 80, 3)):
        write_sst_file(tmp / f"{name}.txt", synthetic_rows(n, seed))
    params = {"backbone": "random:tiny", "option": "finetune", "epochs": epochs, "batch_size": 16, "max_len": 24}
    job = make_job(tmp, tmp, name="serve_bench", search_space={"lr": 3.0e-3}, params={**params, "seed": 1},
                   search={"algorithm": "random"}, num_samples=1, scheduler={"type": "fifo"}, confirm=None)  # fmt: skip
    return run_sweep(job, run_id="r", progress="quiet").run_dir


def bare_tps(model, texts: list[str], threads: int) -> float:
    """Texts per second of the model's batched forward pass over ``texts`` (after one warm-up pass)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.predict_proba(texts[:64])
        t0 = time.perf_counter()
        model.predict_proba(texts)
        return len(texts) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def load(url: str, chunks: list[list[str]], clients: int) -> tuple[list[float], float]:
    """(each request's latency in s, the wall seconds) of ``chunks`` sent by ``clients`` threads."""
    import requests

    def client(part: list[list[str]]) -> list[float]:
        out = []
        with requests.Session() as session:
            for texts in part:
                t0 = time.perf_counter()
                resp = session.post(f"{url}/predict", json={"texts": texts}, timeout=120)
                out.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    raise RuntimeError(f"{resp.status_code}: {resp.text}")
        return out

    parts = [chunks[i::clients] for i in range(clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, parts) for x in part]
    return latencies, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(source: Path, args) -> dict:
    """Bare first, then the served levels; returns the figures of the last line."""
    from conftest import synthetic_rows
    from sentune.inference import open_model
    from sentune.serving import serve_model, stop_serving

    model = open_model(source)
    per = args.texts_per_request
    texts = [text for _, text in synthetic_rows(max(args.requests * per, 256), 11)]
    threads = max(1, int(model.info.get("resources", {}).get("cpus", 1)))
    bare = bare_tps(model, texts, threads)
    print(f"bare predict_proba: {bare:.0f} texts/s ({len(texts)} texts, {threads} torch thread(s))")
    url = serve_model(source, port=_free_port(), blocking=False)
    figures = {"bare_tps": bare}
    try:
        chunks = [texts[i * per : (i + 1) * per] for i in range(args.requests)]
        load(url, chunks[: min(8, len(chunks))], 1)  # warm-up: the replica's first forward passes
        for clients in CLIENTS:
            latencies, wall = load(url, chunks, clients)
            p50, p99, tps = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, len(chunks) * per / wall
            print(f"{clients:>2} clients: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  {tps:7.0f} texts/s")
            figures |= {f"p50_{clients}": p50, f"p99_{clients}": p99, f"tps_{clients}": tps}
    finally:
        stop_serving()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per level")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the small model's training")
    ap.add_argument("--model", help="serve this run or model folder instead of training a small model")
    ap.add_argument("--smoke", action="store_true", help="one epoch, 20 requests a level; files removed")
    args = ap.parse_args()
    if args.smoke:
        args.requests, args.epochs = 20, 1
    import ray

    from sentune.tuning import init_ray

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    init_ray(num_cpus=2)
    try:
        source = Path(args.model) if args.model else train_small_model(tmp, args.epochs)
        f = measure(source, args)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = f["bare_tps"] / f["tps_32"]
    print(f"serving overhead at 32 clients: the bare forward pass labels {ratio:.1f}x the texts per second")
    print(
        f"serve_latency: p50_1={f['p50_1']:.1f} p99_32={f['p99_32']:.1f} tps_32={f['tps_32']:.0f} "
        f"bare_tps={f['bare_tps']:.0f} ratio_32={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
