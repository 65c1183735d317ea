"""The warm evaluator travels in the Tuner's pickled callbacks without its actor handle."""

import ray.cloudpickle as cloudpickle

from sentune.trainables import get_trainable
from sentune.tuning._callback import OnceATrialEnds
from sentune.tuning._tasks import WarmEvaluator


def test_a_started_evaluator_is_pickled_without_its_actor_so_a_resume_in_a_new_ray_can_load_it(ray_local):
    evaluator = WarmEvaluator(get_trainable("llama_torch"), gpus=0)
    evaluator.start()  # a small sweep starts it before the Tuner saves its state
    try:
        assert evaluator._handle is not None
        # what Ray writes to the run folder's tuner.pkl: the callbacks, this among them
        restored = cloudpickle.loads(cloudpickle.dumps([OnceATrialEnds(1, evaluator.start)]))[0]
        again = restored.then.__self__
        assert again._handle is None and again.entry.name == "llama_torch" and again.wanted
        assert evaluator._handle is not None  # the sweep's own evaluator keeps its actor
    finally:
        evaluator.stop()
