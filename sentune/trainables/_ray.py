"""The Ray layer around a trainable's plain training loop.

Each Tune trial runs :func:`trial_driver`, which builds a Ray Train ``TorchTrainer`` (Train V2) whose
workers run the trainable's ``fit`` loop with DDP; ``TuneReportCallback`` forwards every epoch's
metrics (and the checkpoint path) to Tune.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

__all__ = ["prepare_on_cluster", "predict_on_cluster", "range_test_on_cluster", "make_trial_driver", "task_resources"]


def task_resources(cpus: float, gpus: float) -> dict:
    """One-off tasks (features, evaluation) take a whole GPU, or every CPU of the largest node."""
    import ray

    if gpus > 0:
        return {"num_cpus": cpus, "num_gpus": 1}
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return {"num_cpus": max([cpus, *node_cpus])}


def _use_task_cpus() -> None:
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _submit(fn, name: str, cpus: float, gpus: float, *args):
    """Run ``fn(*args)`` as one Ray task sized by :func:`task_resources`; returns its ObjectRef."""
    import ray

    return ray.remote(fn).options(**task_resources(cpus, gpus), name=name).remote(*args)


def _prepare_task(info, params: dict, splits):
    _use_task_cpus()
    return info.load().prepare(info.params_model(**params), splits, device=_device())


def prepare_on_cluster(info, params: dict, splits, *, cpus: float, gpus: float):
    """Tokenize / compute frozen features once, in one Ray task; returns the ObjectRef of the result."""
    return _submit(_prepare_task, f"sentune-prepare-{info.name}", cpus, gpus, info, params, splits)


def _predict_task(info, checkpoint_dir: str, data, splits: list[str]):
    _use_task_cpus()
    mod = info.load()
    _, model = mod.load_checkpoint(checkpoint_dir, data)
    device = _device()
    return {s: mod.predict(model, data, s, device=device) for s in splits}


def predict_on_cluster(info, checkpoint_dir: str, data_ref, splits: list[str], *, cpus: float, gpus: float):
    import ray

    return ray.get(_submit(_predict_task, "sentune-evaluate", cpus, gpus, info, checkpoint_dir, data_ref, splits))


def _range_task(info, params: dict, data, options: dict) -> list[dict]:
    _use_task_cpus()
    mod = info.load()
    return mod.lr_range_test(info.params_model(**params), data, ctx=mod.LoopContext(device=_device()), **options)


def range_test_on_cluster(info, params: dict, data_ref, options: dict, *, cpus: float, gpus: float) -> list[dict]:
    import ray

    return ray.get(_submit(_range_task, "sentune-lr-range-test", cpus, gpus, info, params, data_ref, options))


def _worker_loop(cfg: dict):
    """Runs on every Ray Train worker."""
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
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg["cpus_per_worker"])))

    def all_reduce_sum(values: np.ndarray) -> np.ndarray:
        if world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.numpy()

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, save):
        metrics = {**metrics, "node_id": node_id}  # which node rank 0 ran on
        if save is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save(Path(tmp))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    loop_ctx = mod.LoopContext(
        world_size=world, rank=rank, device=str(device),
        wrap_model=lambda m: ray.train.torch.prepare_model(m) if world > 1 or device.type != "cpu" else m,
        all_reduce_sum=all_reduce_sum, report=report,
    )
    mod.fit(params, data, loop_ctx)


def make_trial_driver(info, data_ref, *, workers: int, cpus: float, gpus: float, storage_path: str):
    """A Tune function trainable: one TorchTrainer per trial."""
    refs = [data_ref]  # a list, so Tune's pickling keeps the ObjectRef instead of the data

    def trial_driver(config: dict):
        import ray.train
        import ray.tune
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        trial = ray.tune.get_context().get_trial_id()
        per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"info": info, "params": config, "data_ref": refs, "cpus_per_worker": cpus},
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
            run_config=ray.train.RunConfig(
                name=f"train-{trial}", storage_path=storage_path,
                callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            ),
        )
        trainer.fit()

    return trial_driver
