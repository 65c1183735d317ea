"""Does a job's trial fit the cluster? Checked once Ray is up (the driver) and by ``sentune submit`` against the
live cluster (its State API's node list), before anything starts.

A trial's worker needs ``cpus`` CPUs, ``gpus`` GPUs (a fraction packs workers on one device) and ``memory_gb``
of memory; ``workers_per_trial`` of them make the trial. A worker no node can hold, or a trial whose workers
the whole cluster cannot hold at once, would wait forever: that is refused in one line naming the largest
node. With ``placement: pack`` a worker group that no single node holds is only a note (Ray's PACK is soft:
the workers then go to several nodes). On a cluster that autoscales, the node types it may add count too.

Nothing here imports Ray at import time: the node lists come in as plain records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sentune.errors import ConfigError

__all__ = ["NodeSize", "check_fits", "nodes_from_ray", "nodes_from_state_api", "placement_note"]

_KINDS = ("GPU", "CPU", "memory")  # the order a shortfall is named in
_GIB = 1024**3


@dataclass(frozen=True)
class NodeSize:
    """One node's total resources (``memory`` in bytes), or a node type an autoscaler may add."""

    name: str  # "node 10.0.0.5", or "node type gpu_worker (autoscaled)"
    cpus: float = 0.0
    gpus: float = 0.0
    memory: float = 0.0

    def amount(self, kind: str) -> float:
        return {"CPU": self.cpus, "GPU": self.gpus, "memory": self.memory}[kind]

    def describe(self) -> str:
        parts = [_amount(self.cpus, "CPU"), _amount(self.gpus, "GPU")]
        if self.memory:
            parts.append(_amount(self.memory, "memory"))
        return f"{self.name}: {', '.join(parts)}"


def _plural(n: float, word: str) -> str:
    shown = f"{n:g}"
    return f"{shown} {word}" if shown == "1" else f"{shown} {word}s"


def _amount(n: float, kind: str) -> str:
    if kind == "memory":
        return f"{n / _GIB:.1f} GiB memory"
    return _plural(n, kind)


def _need(resources) -> dict[str, float]:
    """What one worker needs, by kind (memory in bytes); only kinds it asks for."""
    need = {"CPU": float(resources.cpus), "GPU": float(resources.gpus)}
    if resources.memory_gb:
        need["memory"] = float(resources.memory_gb) * _GIB
    return {k: v for k, v in need.items() if v > 0}


def _holds(node: NodeSize, need: dict[str, float]) -> int:
    """How many such workers the node holds at once (fractional GPUs share a device, whole ones do not)."""
    counts = []
    for kind, want in need.items():
        have = node.amount(kind)
        if kind == "GPU" and want < 1:
            counts.append(int(have) * math.floor(1 / want + 1e-9))
        else:
            counts.append(math.floor(have / want + 1e-9))
    return min(counts) if counts else 0


def _describe_need(need: dict[str, float]) -> str:
    return " and ".join(_amount(need[k], k) for k in ("CPU", "GPU", "memory") if k in need)


def _largest(nodes: list[NodeSize], kind: str) -> NodeSize:
    return max(nodes, key=lambda n: (n.amount(kind), n.gpus, n.cpus, n.memory))


def _roomiest(nodes: list[NodeSize], need: dict[str, float]) -> NodeSize:
    return max(nodes, key=lambda n: (_holds(n, need), n.gpus, n.cpus))


def check_fits(resources, nodes: list[NodeSize], *, job: str) -> None:
    """Raise :class:`ConfigError` (one line) if a trial's worker fits no node, or the cluster cannot hold a
    trial's workers at once. ``nodes``: the cluster's nodes (and node types it may add); none: nothing known."""
    if not nodes:
        return
    need = _need(resources)
    if not any(_holds(n, need) for n in nodes):
        short = next((k for k in _KINDS if k in need and all(n.amount(k) < need[k] for n in nodes)), None)
        if short is None:  # each kind is somewhere, never all of them on one node
            big = _largest(nodes, "GPU" if "GPU" in need else "CPU")
            raise ConfigError(
                f"job {job}: a trial's worker needs {_describe_need(need)}; no node has all of it "
                f"(the largest is {big.describe()})"
            )
        big = _largest(nodes, short)
        raise ConfigError(
            f"job {job}: a trial's worker needs {_amount(need[short], short)}; the largest node has "
            f"{_amount(big.amount(short), short)} ({big.describe()})"
        )
    workers = resources.workers_per_trial
    room = sum(_holds(n, need) for n in nodes)
    if room < workers:
        total = {k: v * workers for k, v in need.items()}
        raise ConfigError(
            f"job {job}: a trial's {workers} workers need {_describe_need(total)} in all; the cluster holds "
            f"{_plural(room, 'such worker')} at once (the most on {_roomiest(nodes, need).describe()})"
        )


def placement_note(resources, nodes: list[NodeSize]) -> str | None:
    """One line when a multi-worker trial cannot be placed as ``placement`` says (both strategies are soft)."""
    workers = resources.workers_per_trial
    if workers == 1 or not nodes:
        return None
    need = _need(resources)
    fitting = [n for n in nodes if _holds(n, need)]
    if resources.placement == "pack" and fitting and max(_holds(n, need) for n in fitting) < workers:
        big = _roomiest(fitting, need)
        return (
            f"placement pack: no node holds a trial's {workers} workers (at most {_holds(big, need)}, on "
            f"{big.describe()}): each trial's workers go to several nodes"
        )
    if resources.placement == "spread" and 0 < len(fitting) < workers:
        return (
            f"placement spread: {workers} workers per trial over {_plural(len(fitting), 'node')} that fit one: "
            "some share a node"
        )
    return None


def nodes_from_ray() -> list[NodeSize]:
    """The live nodes of the Ray this process is connected to, and the node types its autoscaler may add."""
    import ray

    from sentune.tuning._ray_compat import autoscaler_node_types

    live = [
        NodeSize(
            f"node {n.get('NodeManagerAddress', '?')}",
            n["Resources"].get("CPU", 0.0),
            n["Resources"].get("GPU", 0.0),
            n["Resources"].get("memory", 0.0),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    extra = [
        NodeSize(f"node type {name} (autoscaled)", r.get("CPU", 0.0), r.get("GPU", 0.0), r.get("memory", 0.0))
        for name, r in autoscaler_node_types()
    ]
    return live + extra


def nodes_from_state_api(records: list[dict]) -> list[NodeSize]:
    """The live nodes in the State API's ``/api/v0/nodes`` records (``node_ip``, ``state``, ``resources_total``)."""
    out = []
    for r in records:
        if r.get("state") != "ALIVE":
            continue
        total = r.get("resources_total") or {}
        out.append(NodeSize(f"node {r.get('node_ip', '?')}", float(total.get("CPU", 0)), float(total.get("GPU", 0)),
                            float(total.get("memory", 0))))  # fmt: skip
    return out
