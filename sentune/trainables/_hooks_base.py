"""What every framework's :class:`~sentune.trainables._contract.LoopHooks` compute alike, taken out of
them once: the lr multiplier of the scaling rule, each worker's share of the train rows, the per-class
focal alpha, and the sum over the workers. Neither torch nor TensorFlow: a framework's hooks pass in
their own collective."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sentune.trainables._common import focal_class_weights, lr_scale_factor
from sentune.trainables._contract import LoopContext, LoopHooks, PreparedData
from sentune.trainables._params import CoreParams

__all__ = ["SharedHooks"]

AllReduceSum = Callable[[np.ndarray], np.ndarray]


class SharedHooks(LoopHooks):
    """A framework's hooks start from here: call ``super().__init__`` first, then build the model and its
    optimizer at ``params.lr * self.lr_scale`` with ``self.focal_alpha`` (None unless the loss is focal)."""

    def __init__(
        self, params: CoreParams, data: PreparedData, ctx: LoopContext, *, framework_sum: AllReduceSum | None
    ) -> None:
        """``framework_sum``: the framework's sum over the workers, or None when this run has one worker;
        the context's own ``all_reduce_sum`` takes its place when set."""
        train_y = data.splits["train"].y
        self.lr_scale = lr_scale_factor(params.lr_scaling, ctx.world_size)
        self.per_rank = len(train_y) // ctx.world_size
        self.focal_alpha = focal_class_weights(params, train_y, data.num_classes)
        self._reduce = ctx.all_reduce_sum or framework_sum

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        return values if self._reduce is None else self._reduce(values)
