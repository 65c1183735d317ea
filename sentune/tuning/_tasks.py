"""One-off Ray tasks around a trainable: prepare the data once per job, score the best checkpoint, run
the LR range test."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sentune.trainables import LoopContext, TrainableEntry, lr_range_test

__all__ = [
    "predict_on_cluster",
    "prepare_on_cluster",
    "range_test_on_cluster",
    "WarmEvaluator",
    "task_resources",
]


def task_resources(cpus: float, gpus: float) -> dict:
    """One-off tasks (features, evaluation) take a whole GPU, or every CPU of the largest node."""
    import ray

    if gpus > 0:
        return {"num_cpus": cpus, "num_gpus": 1}
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return {"num_cpus": max([cpus, *node_cpus])}


def _task_cpus() -> int:
    import ray

    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def _submit(fn, name: str, cpus: float, gpus: float, *args):
    """Run ``fn(*args)`` as one Ray task sized by :func:`task_resources`; returns its ObjectRef."""
    import ray

    return ray.remote(fn).options(**task_resources(cpus, gpus), name=name).remote(*args)


def _prepare_task(entry: TrainableEntry, params: dict, splits):
    trainable = entry.load()
    device = trainable.use_cpus(_task_cpus())
    return trainable.prepare(entry.params_model(**params), splits, device=device)


def prepare_on_cluster(entry: TrainableEntry, params: dict, splits, *, cpus: float, gpus: float):
    """Tokenize / compute frozen features once, in one Ray task; returns the ObjectRef of the result."""
    return _submit(_prepare_task, f"sentune-prepare-{entry.name}", cpus, gpus, entry, params, splits)


def _predict(trainable, device: str, checkpoint_dir: str, data, splits: list[str], storage: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if storage and not Path(checkpoint_dir).is_dir():  # a checkpoint behind a URI: fetch it first
            import pyarrow.fs as pafs

            fs, _ = pafs.FileSystem.from_uri(storage)
            pafs.copy_files(checkpoint_dir, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            checkpoint_dir = tmp
        _, model = trainable.load_checkpoint(checkpoint_dir, data)
        return {s: trainable.predict(model, data, s, device=device) for s in splits}


def _predict_task(entry: TrainableEntry, checkpoint_dir: str, data, splits: list[str], storage: str | None):
    trainable = entry.load()
    return _predict(trainable, trainable.use_cpus(_task_cpus()), checkpoint_dir, data, splits, storage)


class _Evaluator:
    """A process that imports the trainable's framework while the sweep runs (no CPU reserved: it only
    imports), so that the best checkpoint's evaluation after the sweep starts at once."""

    def __init__(self, entry: TrainableEntry):
        import os

        os.nice(19)  # its imports take only what the trials leave idle; by the time it predicts, they are done
        self.trainable = entry.load()
        self.trainable.warm_up()

    def ready(self) -> bool:
        return True

    def predict(self, checkpoint_dir: str, data, splits: list[str], storage: str | None, cpus: int) -> dict:
        return _predict(self.trainable, self.trainable.use_cpus(cpus), checkpoint_dir, data, splits, storage)


class WarmEvaluator:
    """The warm evaluator of a CPU job (none on GPUs: the evaluation then takes a GPU as a task), started while
    the data is prepared (:meth:`start`, by the sweep plan: one task runs then, so its imports take a core that
    would idle, and they are over when the trials start; started at the first trial's end instead, they
    competed with the trials for the CPUs: bench/scale.py ratio_320 1.10 then, 1.08 now), or when the finish
    asks for it (:attr:`handle`)."""

    def __init__(self, entry: TrainableEntry, *, gpus: float):
        self.entry, self.wanted = entry, gpus <= 0
        self._handle: Any = None

    def start(self) -> None:
        if self.wanted and self._handle is None:
            import ray

            self._handle = ray.remote(num_cpus=0)(_Evaluator).options(name=None).remote(self.entry)

    @property
    def handle(self):
        """The evaluator actor (started now if it was not), or None for a GPU job."""
        self.start()
        return self._handle

    def __getstate__(self) -> dict:
        # a handle to this process's actor does not travel: unpickled in another Ray (a resumed sweep's) it
        # fails to load; a copy starts its own actor when asked (:attr:`handle`)
        return {**self.__dict__, "_handle": None}

    def stop(self) -> None:
        if self._handle is not None:
            import ray

            ray.kill(self._handle)
            self._handle = None


def predict_on_cluster(
    entry: TrainableEntry,
    checkpoint_dir: str,
    data_ref,
    splits: list[str],
    *,
    cpus: float,
    gpus: float,
    storage: str | None = None,
    evaluator=None,
):
    """The predictions of a checkpoint on ``splits``: in the warm ``evaluator`` when there is one (every CPU
    of the largest node), else in a task sized by :func:`task_resources`."""
    import ray

    if evaluator is not None:
        threads = int(task_resources(cpus, 0)["num_cpus"])
        try:
            return ray.get(evaluator.predict.remote(checkpoint_dir, data_ref, splits, storage, max(1, threads)))
        except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError):
            pass  # its node died during the sweep: evaluate in a task on a node that is left
    return ray.get(
        _submit(_predict_task, "sentune-evaluate", cpus, gpus, entry, checkpoint_dir, data_ref, splits, storage)
    )


def _range_task(entry: TrainableEntry, params: dict, data, options: dict) -> list[dict]:
    trainable = entry.load()
    device = trainable.use_cpus(_task_cpus())
    return lr_range_test(trainable, entry.params_model(**params), data, ctx=LoopContext(device=device), **options)


def range_test_on_cluster(
    entry: TrainableEntry, params: dict, data_ref, options: dict, *, cpus: float, gpus: float
) -> list[dict]:
    import ray

    return ray.get(_submit(_range_task, "sentune-lr-range-test", cpus, gpus, entry, params, data_ref, options))
