"""A real two-node Ray cluster on this machine: `ray start --head` (token auth on, dashboard on loopback)
plus a second node joined with `ray start --address`, each with its own temp folder.

``stop()`` kills exactly the processes of this cluster (found by its temp folders and GCS address, and
their children), so a test never touches another Ray on the machine, and never leaves one behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray._private.services as services

    return services.get_node_ip_address()


class LocalCluster:
    def __init__(self, root: Path, *, head_cpus: int = 1, worker_cpus: int = 1):
        self.root = Path(root)
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.token_path = self.root / "auth_token"
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.ip = node_ip()
        self.gcs_address = f"{self.ip}:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        # short temp folders: Ray's socket paths must stay under the Unix limit of 107 bytes
        self.temp_dirs = [Path(f"/tmp/st-{os.getpid()}-{secrets.token_hex(3)}-{n}") for n in ("h", "w")]

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    def env(self, **extra) -> dict:
        """What every process that talks to this cluster needs: token mode, the token, the venv on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
            RAY_DISABLE_USAGE_STATS="1",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            # the nodes' workers use the State API: with another Ray on this machine, say which is theirs
            RAY_API_SERVER_ADDRESS=self.dashboard,
        )
        env.update(extra)
        return env

    def _ray_start(self, *args: str) -> None:
        out = subprocess.run(
            [str(BIN / "ray"), "start", *args, "--disable-usage-stats"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def start(self) -> LocalCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_path.write_text(secrets.token_hex(32))
        for d in self.temp_dirs:
            d.mkdir(parents=True, exist_ok=True)
        self._ray_start(
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={self.head_cpus}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.temp_dirs[0]}",
        )
        self._ray_start(
            f"--address={self.gcs_address}",
            f"--num-cpus={self.worker_cpus}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.temp_dirs[1]}",
        )
        self.wait_for_nodes(2)
        return self

    def node_ids(self) -> list[str]:
        import requests

        r = requests.get(
            f"{self.dashboard}/api/v0/nodes", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        r.raise_for_status()
        return sorted(n["node_id"] for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE")

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.node_ids()) >= n:
                    return
            except Exception:  # the dashboard may still be starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {n} nodes in {timeout} s")
            time.sleep(1)

    def _processes(self) -> list[psutil.Process]:
        marks = [str(d) for d in self.temp_dirs] + [self.gcs_address]
        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(m in cmd for m in marks):
                found[p.pid] = p
                try:
                    found.update({c.pid: c for c in p.children(recursive=True)})
                except psutil.NoSuchProcess:
                    pass
        found.pop(os.getpid(), None)
        return list(found.values())

    def kill_worker_node(self) -> int:
        """SIGKILL the second node's raylet and every process it started (a node lost at once); returns
        how many processes were killed."""
        procs = [p for p in self._processes() if self._on(p, self.temp_dirs[1])]
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        return len(procs)

    @staticmethod
    def _on(p: psutil.Process, temp_dir: Path) -> bool:
        try:
            procs = [p, *p.parents()]
            return any(str(temp_dir) in " ".join(q.cmdline()) for q in procs)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def stop(self) -> None:
        procs = self._processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def submission_id(stdout: str) -> str:
    """The id `sentune submit` (or `resume --submit`) printed: its line ``submitted <id>`` (the upload's summary
    lines come before it)."""
    for line in stdout.splitlines():
        if line.startswith("submitted "):
            return line.split()[1]
    raise AssertionError(f"no 'submitted <id>' line in: {stdout[-2000:]}")
