"""One Tune trial: a function trainable that runs the trainable's loop on Ray Train workers.

Each trial builds the trainable's Ray Train trainer (``TorchTrainer`` with DDP, ``TensorflowTrainer``
with MultiWorkerMirroredStrategy: :meth:`Trainable.ray_trainer`) whose workers run the shared epoch
driver; ``TuneReportCallback`` forwards every epoch's metrics (and the checkpoint path) to Tune.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sentune.trainables import TrainableEntry

__all__ = ["make_trial_driver", "scaling_kwargs"]


def _reporter(rank: int):
    """``report(metrics, save)`` for the loop: node id added; rank 0 attaches the checkpoint."""
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


def _worker_loop(cfg: dict):
    """Runs on every worker of the trial's Ray Train trainer."""
    import ray
    import ray.train

    entry: TrainableEntry = cfg["entry"]
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    trainable = entry.load()
    # first: TensorFlow's strategy must exist before any other TensorFlow op
    loop_ctx = trainable.worker_context(
        world_size=world, rank=rank, cpus=max(1, int(cfg["cpus_per_worker"])), report=_reporter(rank)
    )
    params = entry.params_model(**cfg["params"])
    data = ray.get(cfg["data_ref"][0])
    trainable.fit(params, data, loop_ctx)


def scaling_kwargs(workers: int, cpus: float, gpus: float) -> dict:
    """Ray Train's ScalingConfig for a trial: ``gpus`` per worker may be a fraction (0.25 packs four
    trials' workers on one GPU); each worker also takes ``cpus``."""
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    return {"num_workers": workers, "use_gpu": gpus > 0, "resources_per_worker": per_worker}


def make_trial_driver(
    entry: TrainableEntry, data_ref, *, workers: int, cpus: float, gpus: float, storage_path: str, job: str = "sentune"
):
    """A Tune function trainable: one Ray Train run per trial, named ``<job>-<trial id>`` (the dashboard's
    Train view)."""
    refs = [data_ref]  # a list, so Tune's pickling keeps the ObjectRef instead of the data

    def trial_driver(config: dict):
        import ray.train
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        trial = ray.tune.get_context().get_trial_id()
        trainer = entry.load().ray_trainer()(
            _worker_loop,
            train_loop_config={"entry": entry, "params": config, "data_ref": refs, "cpus_per_worker": cpus},
            scaling_config=ray.train.ScalingConfig(**scaling_kwargs(workers, cpus, gpus)),
            run_config=ray.train.RunConfig(
                name=f"{job}-{trial}",
                storage_path=storage_path,
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train V2 UserCallback
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            ),
        )
        trainer.fit()

    return trial_driver
