"""The warm evaluator: started by the sweep plan while the data is prepared (its imports then take a core
that would idle), and pickled without its actor handle."""

import ray.cloudpickle as cloudpickle

from sentune.trainables import get_trainable
from sentune.tuning._tasks import WarmEvaluator


def test_a_started_evaluator_is_pickled_without_its_actor_so_a_resume_in_a_new_ray_can_load_it(ray_local):
    evaluator = WarmEvaluator(get_trainable("llama_torch"), gpus=0)
    evaluator.start()
    try:
        assert evaluator._handle is not None
        again = cloudpickle.loads(cloudpickle.dumps(evaluator))
        assert again._handle is None and again.entry.name == "llama_torch" and again.wanted
        assert evaluator._handle is not None  # the sweep's own evaluator keeps its actor
    finally:
        evaluator.stop()


def test_the_plan_starts_the_evaluator_with_the_datas_preparation(ray_local, sst_dir, tmp_path):
    """By the time the plan is made (the data prepared), a CPU tune job's evaluator is on its way, before
    any trial starts; a job on GPUs has none (its evaluation takes a GPU as a task)."""
    import ray

    from conftest import make_job
    from sentune.tuning._plan import make_plan
    from sentune.tuning._run_folder import RunFolder, unlock_run

    spec = make_job(sst_dir, tmp_path)
    plan = make_plan(spec, RunFolder.new(spec, "r"), address=None, verbose=False)
    try:
        assert plan.evaluator is not None and plan.evaluator._handle is not None
        assert ray.get(plan.evaluator._handle.ready.remote(), timeout=120)
    finally:
        plan.evaluator.stop()
        unlock_run(plan.run_dir)
    on_gpus = WarmEvaluator(get_trainable("llama_torch"), gpus=0.5)
    on_gpus.start()
    assert on_gpus.handle is None
