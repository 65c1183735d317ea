"""Results: the Parquet store of a run, its record and its aggregation. Imports neither Ray, TensorFlow
nor torch."""

from sentune.results._aggregate import (
    best_config,
    best_trial,
    export_run,
    format_leaderboard,
    format_table,
    leaderboard,
    write_best_config,
    write_evaluation,
)
from sentune.results._compare import (
    best_baseline,
    budget,
    comparison_line,
    format_budget,
    read_evaluations,
    read_reference,
    split_figures,
    write_evaluations,
    write_reference,
)
from sentune.results._range import lr_search_range, suggest_lr, write_range_test
from sentune.results._recorder import RunRecorder
from sentune.results._storage import fetch_run, is_uri, join_uri, resolve_run_dir, staging_dir, upload_run
from sentune.results._report import write_report
from sentune.results._runs import HEARTBEAT, HEARTBEAT_EVERY_S, list_runs, run_status
from sentune.results._seed_report import write_seed_report
from sentune.results._store import (
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    read_epochs,
    read_run_info,
    read_trials,
    write_run_info,
)

__all__ = [
    "STATUS_COMPLETED", "STATUS_ERRORED", "STATUS_RUNNING", "STATUS_STOPPED", "RunRecorder",
    "best_config", "best_trial", "export_run", "format_leaderboard", "format_table", "leaderboard", "read_epochs",
    "read_run_info", "read_trials", "write_best_config", "write_evaluation", "write_run_info", "lr_search_range",
    "suggest_lr", "write_range_test", "write_report", "fetch_run", "is_uri", "join_uri", "resolve_run_dir",
    "staging_dir", "upload_run", "write_seed_report", "HEARTBEAT", "HEARTBEAT_EVERY_S", "list_runs", "run_status",
    "best_baseline", "budget", "comparison_line", "format_budget", "read_evaluations", "read_reference",
    "split_figures", "write_evaluations", "write_reference",
]

