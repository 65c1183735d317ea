"""Time from `sentune submit` to the first trial result on a real two-node local Ray cluster.

Starts `ray start --head` (token auth, dashboard on loopback) + a second node, submits a tiny
llama_torch job (2 trials x 2 epochs, one per node) from a user folder with `sentune submit`, and
prints: submit command time, submit -> first epoch result (from `reported_at` in epochs.parquet),
submit -> SUCCEEDED. Stops every node it started.

    python bench/submit_latency.py [--repeats 1]
    python bench/submit_latency.py --smoke     # one submission, 1 epoch a trial, smaller data, no reference model

Last line (the last run's figures): ``submit_latency: submit_s=.. first_result_s=.. done_s=.. status=..``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import synthetic_rows, write_sst_file  # noqa: E402
from localcluster import LocalCluster  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900, help="seconds a job may take before the bench gives up")
    ap.add_argument("--smoke", action="store_true", help="one submission of 2 trials x 1 epoch on 120 rows")
    args = ap.parse_args()
    epochs, rows = 2, 240
    if args.smoke:
        args.repeats, epochs, rows, args.timeout = 1, 1, 120, min(args.timeout, 300)
    last = ""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        project = tmp / "project"
        project.mkdir()
        for name, n, seed in (("train", rows, 1), ("dev", rows // 3, 2), ("test", rows // 3, 3)):
            write_sst_file(project / f"{name}.txt", synthetic_rows(n, seed))
        job = dict(
            name="tiny",
            trainable="llama_torch",
            data={"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
            search_space={"lr": {"grid": [3.0e-3, 1.0e-3]}},
            params={
                "backbone": "random:tiny",
                "option": "finetune",
                "epochs": epochs,
                "batch_size": 16,
                "max_len": 24,
                "seed": 1,
            },
            search={"algorithm": "grid"},
            scheduler={"type": "fifo"},
            resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 2},
            seed=0,
            reference=not args.smoke,
        )
        (project / "job.yaml").write_text(yaml.safe_dump(job))
        t0 = time.perf_counter()
        with LocalCluster(tmp / "cluster") as cluster:
            print(f"cluster up (2 nodes, token auth) in {time.perf_counter() - t0:.1f} s")
            for i in range(args.repeats):
                store = tmp / f"store{i}"
                t_submit = time.time()
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "sentune.cli",
                        "submit",
                        "job.yaml",
                        "--address",
                        cluster.dashboard,
                        "--storage",
                        str(store),
                    ],
                    cwd=project,
                    env=cluster.env(),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                submit_s = time.time() - t_submit
                # "submitted <id>", after the upload's own lines
                sid = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("submitted "))
                status = "?"
                while status not in ("SUCCEEDED", "FAILED", "STOPPED"):
                    if time.time() - t_submit > args.timeout:
                        raise SystemExit(f"submit_latency: job {sid} not done after {args.timeout:.0f} s ({status})")
                    time.sleep(1)
                    st = subprocess.run(
                        [sys.executable, "-m", "sentune.cli", "status", sid, "--address", cluster.dashboard],
                        env=cluster.env(),
                        capture_output=True,
                        text=True,
                    )
                    status = st.stdout.split(":")[1].split()[0] if ":" in st.stdout else "?"
                done_s = time.time() - t_submit
                if status != "SUCCEEDED":
                    raise SystemExit(f"submit_latency: job {sid} {status} after {done_s:.0f} s")
                run = next((store / "tiny").iterdir())
                record = pd.read_parquet(run / "epochs.parquet")
                first = record.reported_at.min() - t_submit
                print(
                    f"run {i + 1}: {status}; `sentune submit` returned in {submit_s:.1f} s; "
                    f"submit -> first trial result {first:.1f} s; submit -> {status} {done_s:.1f} s; "
                    f"trials on {record.node_id.nunique()} nodes"
                )
                last = (
                    f"submit_latency: submit_s={submit_s:.1f} first_result_s={first:.1f} done_s={done_s:.1f} "
                    f"status={status}"
                )
    print(last)


if __name__ == "__main__":
    main()
