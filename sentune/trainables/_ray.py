"""The Ray layer around a trainable's plain training loop.

Each Tune trial runs :func:`trial_driver`, which builds a Ray Train ``TorchTrainer`` (Train V2) whose
workers run the trainable's ``fit`` loop with DDP; ``TuneReportCallback`` forwards every epoch's
metrics (and the checkpoint path) to Tune.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["prepare_on_cluster", "predict_on_cluster", "range_test_on_cluster", "make_trial_driver", "task_resources",
           "scaling_kwargs"]


def task_resources(cpus: float, gpus: float) -> dict:
    """One-off tasks (features, evaluation) take a whole GPU, or every CPU of the largest node."""
    import ray

    if gpus > 0:
        return {"num_cpus": cpus, "num_gpus": 1}
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return {"num_cpus": max([cpus, *node_cpus])}


def _use_task_cpus(info) -> None:
    import ray

    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    if info.framework == "torch":
        import torch

        torch.set_num_threads(cpus)
    else:
        os.environ["SENTUNE_TF_THREADS"] = str(cpus)


def _device(info) -> str:
    """torch needs a device; TensorFlow places ops itself (it uses a GPU when it sees one)."""
    if info.framework != "torch":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _submit(fn, name: str, cpus: float, gpus: float, *args):
    """Run ``fn(*args)`` as one Ray task sized by :func:`task_resources`; returns its ObjectRef."""
    import ray

    return ray.remote(fn).options(**task_resources(cpus, gpus), name=name).remote(*args)


def _prepare_task(info, params: dict, splits):
    _use_task_cpus(info)
    return info.load().prepare(info.params_model(**params), splits, device=_device(info))


def prepare_on_cluster(info, params: dict, splits, *, cpus: float, gpus: float):
    """Tokenize / compute frozen features once, in one Ray task; returns the ObjectRef of the result."""
    return _submit(_prepare_task, f"sentune-prepare-{info.name}", cpus, gpus, info, params, splits)


def _predict_task(info, checkpoint_dir: str, data, splits: list[str], storage: str | None):
    _use_task_cpus(info)
    mod = info.load()
    with tempfile.TemporaryDirectory() as tmp:
        if storage and not Path(checkpoint_dir).is_dir():  # a checkpoint behind a URI: fetch it first
            import pyarrow.fs as pafs

            fs, _ = pafs.FileSystem.from_uri(storage)
            pafs.copy_files(checkpoint_dir, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            checkpoint_dir = tmp
        _, model = mod.load_checkpoint(checkpoint_dir, data)
        device = _device(info)
        return {s: mod.predict(model, data, s, device=device) for s in splits}


def predict_on_cluster(info, checkpoint_dir: str, data_ref, splits: list[str], *, cpus: float, gpus: float,
                       storage: str | None = None):
    import ray

    return ray.get(_submit(_predict_task, "sentune-evaluate", cpus, gpus, info, checkpoint_dir, data_ref, splits,
                           storage))


def _range_task(info, params: dict, data, options: dict) -> list[dict]:
    _use_task_cpus(info)
    mod = info.load()
    ctx = mod.LoopContext(device=_device(info)) if info.framework == "torch" else mod.LoopContext()
    return mod.lr_range_test(info.params_model(**params), data, ctx=ctx, **options)


def range_test_on_cluster(info, params: dict, data_ref, options: dict, *, cpus: float, gpus: float) -> list[dict]:
    import ray

    return ray.get(_submit(_range_task, "sentune-lr-range-test", cpus, gpus, info, params, data_ref, options))


def _reporter(rank: int):
    """``report(metrics, save)`` for a trainable's loop: node id added; rank 0 attaches the checkpoint."""
    import ray
    import ray.train

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, save):
        metrics = {**metrics, "node_id": node_id}  # which node rank 0 ran on
        if save is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save(Path(tmp))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    return report


def _tf_worker_loop(cfg: dict):
    """Runs on every worker of a TensorflowTrainer (which has set TF_CONFIG for the whole group)."""
    import ray
    import ray.train

    cpus = max(1, int(cfg["cpus_per_worker"]))
    info = cfg["info"]
    mod = info.load()
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    # MultiWorkerMirroredStrategy for several workers: made first, before any other TensorFlow op
    strategy = mod.make_strategy(world, cpus=cpus)
    params = info.params_model(**cfg["params"])
    data = ray.get(cfg["data_ref"][0])
    # the loop builds its cross-worker sum from the strategy itself
    loop_ctx = mod.LoopContext(world_size=world, rank=rank, strategy=strategy, report=_reporter(rank), cpus=cpus)
    mod.fit(params, data, loop_ctx)


def _worker_loop(cfg: dict):
    """Runs on every worker of a TorchTrainer."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    info = cfg["info"]
    mod = info.load()
    params = info.params_model(**cfg["params"])
    data = ray.get(cfg["data_ref"][0])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():  # a logical GPU on a node without CUDA
        device = torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg["cpus_per_worker"])))

    def all_reduce_sum(values: np.ndarray) -> np.ndarray:
        if world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.numpy()

    loop_ctx = mod.LoopContext(
        world_size=world, rank=rank, device=str(device),
        wrap_model=lambda m: ray.train.torch.prepare_model(m) if world > 1 or device.type != "cpu" else m,
        all_reduce_sum=all_reduce_sum, report=_reporter(rank),
    )
    mod.fit(params, data, loop_ctx)


def scaling_kwargs(workers: int, cpus: float, gpus: float) -> dict:
    """Ray Train's ScalingConfig for a trial: ``gpus`` per worker may be a fraction (0.25 packs four
    trials' workers on one GPU); each worker also takes ``cpus``."""
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    return {"num_workers": workers, "use_gpu": gpus > 0, "resources_per_worker": per_worker}


def make_trial_driver(info, data_ref, *, workers: int, cpus: float, gpus: float, storage_path: str, job: str = "sentune"):
    """A Tune function trainable: one TorchTrainer per trial, named ``<job>-<trial id>`` (the dashboard's Train view)."""
    refs = [data_ref]  # a list, so Tune's pickling keeps the ObjectRef instead of the data

    def trial_driver(config: dict):
        import ray.train
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        if info.framework == "torch":
            from ray.train.torch import TorchTrainer as Trainer

            loop = _worker_loop
        else:
            from ray.train.tensorflow import TensorflowTrainer as Trainer

            loop = _tf_worker_loop
        trial = ray.tune.get_context().get_trial_id()
        trainer = Trainer(
            loop,
            train_loop_config={"info": info, "params": config, "data_ref": refs, "cpus_per_worker": cpus},
            scaling_config=ray.train.ScalingConfig(**scaling_kwargs(workers, cpus, gpus)),
            run_config=ray.train.RunConfig(
                name=f"{job}-{trial}", storage_path=storage_path,
                callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            ),
        )
        trainer.fit()

    return trial_driver
