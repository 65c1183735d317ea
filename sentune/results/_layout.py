"""The names of a run folder (``<storage>/<job>/<run>/``): every file and folder sentune writes there, the
values its tables use for a trial's status and role, and the reference model's row id. Names only (this
module imports nothing of sentune): every other module of the package, and the layers above, take them
from here.

``run.json``                    the job's name, trainable, metric/mode, class names, data, search space, status
``trials.parquet``              one row per trial: status, role, epochs run, peak metric and epoch, checkpoint
``epochs.parquet/``             one row per (trial, epoch), a folder of ``part-NNNNNN.parquet`` files
``evaluation.json``             the best trial's (and the best baseline's) dev and test figures
``reference.json``              the reference model's figures
``leaderboard.csv``             the leaderboard, the reference row included
``best_config.yaml``            a config that re-runs the best trial alone
``predictions_<split>.csv``     the best checkpoint's predictions on dev / test
``classification_report.csv``   scikit-learn's classification report of the best checkpoint on test
``training_report_<stamp>.csv`` a one-row summary of the best trial (the LSTM training script's columns)
``report.html``                 the report page
``importance.json``             which tuned options explain the metric (fANOVA, PED-ANOVA)
``optuna.journal``              the Optuna study mirroring the sweep (``tracking: {optuna: true}``)
``heartbeat``                   a running driver's last beat (seconds since the epoch)
``lr_range.parquet`` / ``lr_range.png`` / ``lr_suggestion.json``  an LR range test's curve and suggestion
``tune/``, ``train/``, ``resume/``  Ray Tune's state, Ray Train's checkpoints, the trials' resume states
"""

from __future__ import annotations

import re

__all__ = [
    "RUN_INFO", "TRIALS", "EPOCHS", "EPOCHS_SET_ASIDE", "EVALUATION", "REFERENCE", "LEADERBOARD", "BEST_CONFIG",
    "CLASSIFICATION_REPORT", "REPORT", "IMPORTANCE", "HEARTBEAT", "HEARTBEAT_EVERY_S", "LR_RANGE", "LR_RANGE_PLOT",
    "LR_SUGGESTION", "RAY_FOLDERS", "SEQ", "SCHEMA_PART", "PART_NAME", "part_name", "predictions_file",
    "training_report_file", "REFERENCE_ID", "STATUS_COMPLETED", "STATUS_STOPPED", "STATUS_ERRORED",
    "STATUS_RUNNING", "ENDED", "ROLE_SAMPLED", "ROLE_BASELINE", "ROLE_WARM_START", "ROLE_CONFIRM", "ROLE_REFERENCE",
    "OPTUNA_JOURNAL",
]  # fmt: skip

RUN_INFO = "run.json"
TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
# a single-file epoch record that a crash left aside while it was being turned into a folder: the readers
# take it when there is no epochs.parquet
EPOCHS_SET_ASIDE = f".{EPOCHS}.old"
EVALUATION = "evaluation.json"
REFERENCE = "reference.json"
LEADERBOARD = "leaderboard.csv"
BEST_CONFIG = "best_config.yaml"
CLASSIFICATION_REPORT = "classification_report.csv"
REPORT = "report.html"
IMPORTANCE = "importance.json"
OPTUNA_JOURNAL = "optuna.journal"  # Optuna's journal file of the study mirroring the sweep
HEARTBEAT = "heartbeat"  # a running sweep's driver writes the time here every HEARTBEAT_EVERY_S
HEARTBEAT_EVERY_S = 15.0
LR_RANGE = "lr_range.parquet"
LR_RANGE_PLOT = "lr_range.png"
LR_SUGGESTION = "lr_suggestion.json"
RAY_FOLDERS = ("tune", "train", "resume")  # Ray's state, checkpoints, resume states: not needed to read results

# the parts of epochs.parquet/
SEQ = "_seq"  # a column: the order rows were written in (see sentune.results._store)
SCHEMA_PART = 0  # part-000000.parquet: no rows, the schema of every part
PART_NAME = re.compile(r"^part-(\d+)\.parquet$")


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def predictions_file(split: str) -> str:
    return f"predictions_{split}.csv"


def training_report_file(stamp: str) -> str:
    """``stamp``: ``YYYYMMDD_HHMMSS``."""
    return f"training_report_{stamp}.csv"


REFERENCE_ID = "reference"  # the reference model's trial id in the leaderboard

# a trial's status in trials.parquet (and trial_status in the epoch rows)
STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped_early"
STATUS_ERRORED = "errored"
STATUS_RUNNING = "running"
ENDED = frozenset({STATUS_COMPLETED, STATUS_STOPPED, STATUS_ERRORED})

# a trial's role in trials.parquet (role; the reference row's in the leaderboard)
ROLE_SAMPLED = "sampled"  # drawn by the search algorithm
ROLE_BASELINE = "baseline"  # a config the job gave (``baseline``: its number, from 1)
ROLE_WARM_START = "warm_start"  # an earlier run's best config, run first (``warm_start:``; ``baseline``: its number)
ROLE_CONFIRM = "confirm"  # a confirmation run (``confirm_of``: the trial it trains again with a fresh seed)
ROLE_REFERENCE = "reference"
