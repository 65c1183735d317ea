"""Which devices a trial ran on and how much memory it took, for the record: the GPU ids Ray assigned
each worker and its node (gathered to rank 0 through the loop's sum over the workers, so a worker group's
row names every worker's devices), and the peak memory (a framework's GPU peak, else the process's peak RSS).
Neither torch, TensorFlow nor Ray at import.

The sum over the workers takes a float64 vector; each worker writes its own slots of one and leaves the
others zero, so the sum is every worker's entry side by side."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["MAX_IDS", "gather_devices", "gather_memory", "process_peak_rss_mb", "ray_devices"]

MAX_IDS = 8  # GPU ids one worker may hold in the record (more are left out of it)
_NODE_BYTES = 32  # a Ray node id: 28 bytes as hex
_SLOT = 1 + MAX_IDS + 1 + _NODE_BYTES  # ids count, ids + 1, node id length, node id bytes

Reduce = Callable[[np.ndarray], np.ndarray]


def process_peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _as_id(value) -> int | None:
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def ray_devices() -> tuple[list[int], str | None]:
    """(the GPU ids Ray assigned this worker, its node id); ([], None) outside Ray. Ids that are not whole
    numbers (a MIG instance's UUID) are left out."""
    try:
        import ray

        if not ray.is_initialized():
            return [], None
        ids = [i for i in (_as_id(v) for v in ray.get_gpu_ids()) if i is not None]
        return ids, ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 (bookkeeping never stops a trial)
        return [], None


def _encode(gpu_ids: Sequence[int], node_id: str | None) -> np.ndarray:
    slot = np.zeros(_SLOT)
    ids = list(gpu_ids)[:MAX_IDS]
    slot[0] = len(ids)
    slot[1 : 1 + len(ids)] = np.asarray(ids, dtype=np.float64) + 1
    try:
        raw = bytes.fromhex(node_id or "")[:_NODE_BYTES]
    except ValueError:  # not hex: the record leaves this worker's node out
        raw = b""
    slot[1 + MAX_IDS] = len(raw)
    slot[2 + MAX_IDS : 2 + MAX_IDS + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return slot


def _decode(slot: np.ndarray) -> tuple[list[int], str | None]:
    n, size = int(round(slot[0])), int(round(slot[1 + MAX_IDS]))
    ids = [int(round(v)) - 1 for v in slot[1 : 1 + n]]
    raw = bytes(int(round(v)) for v in slot[2 + MAX_IDS : 2 + MAX_IDS + size])
    return ids, (raw.hex() if raw else None)


def gather_devices(
    reduce: Reduce, world: int, rank: int, gpu_ids: Sequence[int], node_id: str | None
) -> tuple[list[int], list[str | None]]:
    """(every worker's GPU ids, in rank order, one after the other; every worker's node id, in rank order).
    Every worker calls it once, at the same point (a sum over the workers)."""
    vec = np.zeros(world * _SLOT)
    vec[rank * _SLOT : (rank + 1) * _SLOT] = _encode(gpu_ids, node_id)
    total = reduce(vec) if world > 1 else vec
    ids: list[int] = []
    nodes: list[str | None] = []
    for r in range(world):
        worker_ids, node = _decode(total[r * _SLOT : (r + 1) * _SLOT])
        ids += worker_ids
        nodes.append(node)
    return ids, nodes


def gather_memory(
    reduce: Reduce, world: int, rank: int, peak_mb: float, device_mb: float | None
) -> tuple[float, float | None]:
    """(the largest peak of the workers, the smallest device memory of those on a GPU, or None), in MiB.
    Every worker calls it at the same points (a sum over the workers)."""
    vec = np.zeros(2 * world)
    vec[2 * rank], vec[2 * rank + 1] = peak_mb, device_mb or 0.0
    total = reduce(vec) if world > 1 else vec
    devices = [float(d) for d in total[1::2] if d > 0]
    return round(float(total[0::2].max()), 1), (round(min(devices), 1) if devices else None)
