"""Results: a run folder's files, its record, and what they add up to. Imports neither Ray, TensorFlow
nor torch.

In layers, each importing only those below it: ``_layout`` (the names of a run folder's files, statuses,
roles), ``_tables`` (rows as Arrow/pandas tables), ``_store`` (reading and writing the files, atomically);
the record as a run writes it (``_trial_table``, ``_epoch_log``, and ``_recorder``: :class:`RunRecorder`);
``_aggregate`` (the leaderboard, the best trial, the budget, from frames) and ``_view`` (:class:`RunView`:
a run read once); on top, what is made of a view: ``_format`` (text), ``_export`` (leaderboard.csv,
best_config.yaml), ``_compare`` (runs side by side, paired bootstrap), ``_report`` (report.html),
``_training_report``; beside them ``_evaluation``
(predictions files), ``_range`` (the LR range test), ``_runs`` (``sentune runs``), ``_storage`` (runs
behind a URI), ``_optuna`` (a run's Optuna study and optuna-dashboard on it).
"""

from sentune.metrics import split_figures
from sentune.results._compare import compare_runs, format_comparison, paired_test, winner_against
from sentune.results._evaluation import example_predictions, write_predictions
from sentune.results._export import export_run, write_best_config
from sentune.results._format import (
    comparison_line,
    format_budget,
    format_leaderboard,
    format_table,
    gpu_fraction_line,
    second_chance_line,
    study_stop_line,
)
from sentune.results._importance import importance_line, read_importance, write_importance
from sentune.results._layout import (
    ENDED,
    HEARTBEAT,
    HEARTBEAT_EVERY_S,
    REFERENCE_ID,
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
)
from sentune.results._optuna import (
    open_optuna_storage,
    optuna_study_name,
    optuna_target,
    run_optuna_study,
    serve_optuna_dashboard,
)
from sentune.results._range import lr_search_range, suggest_lr, write_range_test
from sentune.results._recorder import RunRecorder
from sentune.results._report import write_report
from sentune.results._runs import list_runs, run_status
from sentune.results._storage import fetch_run, is_uri, join_uri, resolve_run_dir, staging_dir, upload_run
from sentune.results._store import (
    read_epochs,
    read_evaluations,
    read_reference,
    read_run_info,
    read_trials,
    write_evaluations,
    write_reference,
    write_run_info,
)
from sentune.results._training_report import write_training_report
from sentune.results._view import RunView, best_baseline, best_config, best_trial, budget, leaderboard

__all__ = [
    "STATUS_COMPLETED", "STATUS_ERRORED", "STATUS_RUNNING", "STATUS_STOPPED", "REFERENCE_ID", "RunRecorder",
    "RunView", "best_config", "best_trial", "export_run", "format_leaderboard", "format_table", "leaderboard",
    "read_epochs", "read_run_info", "read_trials", "write_best_config", "write_predictions", "ENDED",
    "write_run_info", "lr_search_range", "suggest_lr", "write_range_test", "write_report", "fetch_run", "is_uri",
    "join_uri", "resolve_run_dir", "staging_dir", "upload_run", "write_training_report",
    "HEARTBEAT", "HEARTBEAT_EVERY_S", "list_runs", "run_status", "best_baseline", "budget", "comparison_line",
    "format_budget", "example_predictions", "read_evaluations", "read_reference", "split_figures",
    "write_evaluations", "write_reference", "importance_line", "read_importance", "write_importance",
    "study_stop_line", "second_chance_line", "gpu_fraction_line",
    "compare_runs", "format_comparison", "paired_test", "winner_against",
    "open_optuna_storage", "optuna_study_name", "optuna_target", "run_optuna_study", "serve_optuna_dashboard",
]  # fmt: skip
