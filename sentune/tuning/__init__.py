"""The Ray layer: starting Ray, the Tune sweep of a job, its trials (Ray Train around the trainables'
loops), the one-off tasks, and the Tune callback that feeds the results record."""

from sentune.tuning._session import init_ray, max_concurrent_trials
from sentune.tuning._sweep import RunSummary, resume_sweep, run_range_test, run_sweep

__all__ = ["RunSummary", "init_ray", "max_concurrent_trials", "resume_sweep", "run_range_test", "run_sweep"]
