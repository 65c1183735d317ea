"""The trainable contract: what a model sentune tunes must provide, and the data it shares.

A trainable is a :class:`ModelTrainable` subclass (a model's framework part; unrelated to Ray's
``tune.Trainable``). Its part is small: it prepares the data once per job, builds a :class:`LoopHooks`
(model, optimizer, one optimizer step, evaluation, the state to save) for a run, and loads a saved
checkpoint. Everything around that is written once for all of them and depends on this module, never
the other way round: the epoch driver (:mod:`sentune.trainables._driver`: ``fit`` and ``lr_range_test``
of any trainable; schedule, shards, metrics, best epoch, reports, checkpoints) and the Ray layer
(:mod:`sentune.tuning`), which asks the trainable for its Ray Train trainer and worker context instead
of branching on framework names.

Nothing here imports torch, TensorFlow or Ray.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sentune.trainables._device import process_peak_rss_mb
from sentune.trainables._params import CoreParams
from sentune.trainables._resume import ResumeStore

__all__ = [
    "FitResult",
    "LoopContext",
    "LoopHooks",
    "ModelTrainable",
    "PreparedData",
    "Report",
    "SplitArrays",
    "TextPredictor",
]

# report(metrics, save): called once per epoch on every worker; ``save(dir)`` writes the best-model
# checkpoint and is given only when the monitored metric improved.
Report = Callable[[dict, Callable[[Path], None] | None], None]

# texts -> class probabilities float32 [N, C], batched inside: a model folder loaded by ModelTrainable.load_model
TextPredictor = Callable[[Sequence[str]], np.ndarray]


def _identity(x):
    return x


@dataclass
class SplitArrays:
    """One split as arrays: inputs ``x`` (token ids int32 [N, L], or features float32 [N, H]), labels."""

    x: np.ndarray
    y: np.ndarray  # int64 [N]
    lengths: np.ndarray | None = None  # int32 [N] for token ids


@dataclass(kw_only=True)
class PreparedData:
    """What every trial of a job shares (through the Ray object store when under Ray): the class names,
    the splits as arrays, and whatever the trainable adds (vocabulary, feature size)."""

    label_names: list[str]
    splits: dict[str, SplitArrays]
    pad_id: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


@dataclass
class LoopContext:
    """How a loop talks to whatever runs it: nothing (bare), or one Ray Train worker of several.

    Fields a framework does not use are left at their defaults: ``wrap_model`` (torch: DDP) and
    ``strategy`` (TensorFlow: the ``tf.distribute`` strategy, made before any other TensorFlow op)."""

    world_size: int = 1
    rank: int = 0
    device: str = "cpu"
    cpus: int | None = None  # threads for the framework's CPU kernels (None: its own default)
    report: Report | None = None
    # sums a small float64 vector over the workers (every worker calls it the same number of times);
    # None: identity for one worker, else the trainable's hooks build it from the framework
    all_reduce_sum: Callable[[np.ndarray], np.ndarray] | None = None
    wrap_model: Callable[[Any], Any] = _identity
    strategy: Any = None
    # where the run keeps (and first looks for) its resume checkpoint; None: none kept
    resume: ResumeStore | None = None
    # every report carries a checkpoint with the best weights so far and the full train state (PBT: another
    # trial may go on from it); otherwise only an epoch that improved on the best carries one
    state_in_checkpoint: bool = False
    # the epoch each report's learning-curve forecast is for (the scheduler's max_t); None: the run's epochs
    forecast_to: int | None = None
    # end the run cleanly after this epoch (its resume state written), e.g. a second chance that trains to the
    # next rung; None: train every epoch
    stop_after: int | None = None
    # the GPU ids Ray assigned this worker (also when its device is the CPU: a logical GPU) and its node; for
    # the record (``gpu_ids``, ``worker_node_ids``): empty and None outside Ray
    gpu_ids: list[int] = field(default_factory=list)
    node_id: str | None = None


@dataclass
class FitResult:
    """What a fit returns: every epoch's metrics, the best epoch, and the model with its weights."""

    history: list[dict]
    best_epoch: int
    best_metric: float | None  # None only before the first epoch
    model: Any


class LoopHooks(ABC):
    """The framework part of one run (a fit or an LR range test), built by :meth:`ModelTrainable.hooks`
    with the model and optimizer at the scaled lr; the driver calls these and nothing else
    (:class:`~sentune.trainables._hooks_base.SharedHooks` holds what every framework's hooks compute alike)."""

    model: Any
    lr_scale: float  # the lr multiplier of the LR scaling rule for this many workers
    per_rank: int  # train rows each worker sees per epoch

    @abstractmethod
    def set_lr(self, lr: float) -> None:
        """Use ``lr`` for the next optimizer step."""

    @abstractmethod
    def step(self, idx: np.ndarray) -> tuple[float, float, float]:
        """One optimizer step on train rows ``idx`` of this worker: (loss x rows, correct predictions,
        global gradient norm before clipping)."""

    @abstractmethod
    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """``values`` (float64) summed over the workers."""

    def start_epoch(self) -> None:  # noqa: B027 (optional hook: most frameworks need nothing here)
        """Before an epoch's first step (e.g. the model into training mode)."""

    def end_epoch(self) -> None:  # noqa: B027 (optional hook)
        """After an epoch's last step, before evaluation (e.g. average BatchNorm statistics)."""

    def memory_mb(self) -> tuple[float, float | None]:
        """(this worker's peak memory so far, its device's memory), in MiB: on a GPU the framework's peak of
        this run and the device's size; by default (the CPU) the process's peak RSS and None."""
        return process_peak_rss_mb(), None

    @abstractmethod
    def evaluate(self, split: str) -> tuple[float, np.ndarray]:
        """(mean loss, predicted class ids) on a split of the prepared data."""

    @abstractmethod
    def snapshot(self) -> Any:
        """A copy of the current weights that later training does not change."""

    @abstractmethod
    def restore(self, state: Any) -> None:
        """Put weights from :meth:`snapshot` back into the model."""

    @abstractmethod
    def train_state(self) -> Any:
        """Everything a resumed run needs to go on exactly (on the CPU, in what :mod:`sentune._safe_state`
        stores: dicts, lists, numbers, numpy arrays, torch tensors): weights, optimizer state, the
        framework's RNG states on this worker."""

    @abstractmethod
    def load_train_state(self, state: Any) -> None:
        """Put a :meth:`train_state` back."""

    @abstractmethod
    def write_checkpoint(self, folder: Path, state: Any) -> None:
        """Write weights from :meth:`snapshot` (and what :meth:`ModelTrainable.load_checkpoint` needs) to ``folder``."""


class ModelTrainable(ABC):
    """A model sentune can tune. Subclasses set the class attributes and implement the abstract methods;
    training one is the epoch driver's (:func:`sentune.trainables._driver.fit`), the same for all."""

    name: ClassVar[str]
    params_model: ClassVar[type[CoreParams]]  # its options (import-light: validation needs no framework)

    # --- data
    @abstractmethod
    def prepare(
        self, params: CoreParams, splits, *, device: str = "cpu", log: Callable[[str], None] | None = None
    ) -> PreparedData:
        """Turn the text splits into arrays once per job (tokens, vocabulary, frozen features)."""

    # --- one run
    @abstractmethod
    def hooks(self, params: CoreParams, data: PreparedData, ctx: LoopContext) -> LoopHooks:
        """Seed, build the model (wrapped for data parallelism by ``ctx``) and its optimizer at
        ``lr x lr_scale_factor(params.lr_scaling, ctx.world_size)``."""

    # --- checkpoints and scoring
    @abstractmethod
    def load_checkpoint(self, folder: str | Path, data: PreparedData) -> tuple[CoreParams, Any]:
        """(options, model) from a folder written by :meth:`LoopHooks.write_checkpoint`."""

    @abstractmethod
    def predict(
        self, model: Any, data: PreparedData, split: str, *, device: str = "cpu"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [N, C] and predicted ids [N] for a split."""

    # --- a model folder (``sentune export --model``, ``predict``, ``serve``)
    @abstractmethod
    def write_model(self, checkpoint: Path, train_texts: Callable[[], Sequence[str]], folder: Path) -> dict:
        """Write a checkpoint's model into ``folder`` whole: weights in a format that runs no code when read,
        the tokenizer or vocabulary (``train_texts()``: the train split's texts, read only by a trainable
        whose vocabulary the checkpoint does not hold), the options that
        shape the input. Returns what the model card records of it: ``max_len``, ``params``, and for a model
        that needs a backbone it does not carry, ``needs_backbone``."""

    @abstractmethod
    def load_model(self, folder: Path, *, device: str = "cpu") -> TextPredictor:
        """The texts -> probabilities function of a folder :meth:`write_model` wrote (no run folder needed)."""

    # --- what the Ray layer needs
    @abstractmethod
    def ray_trainer(self) -> type:
        """The Ray Train trainer class whose workers run the epoch driver (TorchTrainer, TensorflowTrainer)."""

    @abstractmethod
    def worker_context(self, *, world_size: int, rank: int, cpus: int, use_gpu: bool, report: Report) -> LoopContext:
        """The loop context on one Ray Train worker, or in the Tune trial itself for one worker (device:
        the GPU Ray assigned when ``use_gpu``, else the CPU; process group or strategy; threads)."""

    def warm_up(self) -> None:
        """Import what loading a checkpoint needs beyond the trainable's module (a process that evaluates
        later calls it ahead of time). Nothing by default."""
        return None

    @abstractmethod
    def use_cpus(self, cpus: int) -> str:
        """Set the framework's thread count for a one-off task (features, evaluation) and return the
        device it should run on."""
