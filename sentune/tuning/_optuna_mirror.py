"""The sweep mirrored, as it runs, into an Optuna study (``tracking: {optuna: ...}``), for optuna-dashboard
(``sentune optuna-dashboard RUN``) or any Optuna reader: one Optuna trial per sweep trial, with its tuned
options as params (their search-space domains as distributions), the epoch metric as intermediate values
(step = epoch), the peak as its value; a trial stopped early is pruned, an errored one failed. User
attributes: ``sentune_trial_id``, ``role`` (``sampled`` / ``baseline`` / ``confirm``), ``baseline`` (its
number), ``confirm_of``, ``config`` (every option), ``epochs_run``, ``peak_epoch``, ``stop_reason``.

The run's record is the source: the callback comes after the one that feeds the record, and each event
brings the Optuna trial up to what the record says, so writing it again changes nothing. A resumed run
(``sentune resume``) finds its Optuna trials by ``sentune_trial_id`` and goes on with them (one that was
running when the driver died is finished once its trial ends, one the record had not written yet comes back
with Tune's state); nothing is added twice. The study is not
the sweep's: an error writing it is one warning, and the next event catches up.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from ray.tune import Callback

from sentune._log import warn
from sentune._uri import redact_text
from sentune.results import (
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_STOPPED,
    RunRecorder,
    open_optuna_storage,
    optuna_study_name,
    optuna_target,
)
from sentune.search import Domain
from sentune.tuning._plan import SweepPlan
from sentune.tuning._trial import revived

__all__ = ["OptunaMirror", "optuna_mirror"]

TRIAL_ID_ATTR = "sentune_trial_id"


def _choice(value: Any) -> Any:
    """A value as Optuna's categorical distributions take it (None, bool, int, float, str)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def distribution(domain: Domain) -> Any:
    """The Optuna distribution of a search-space domain (a ``quniform`` one as its continuous range)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if domain.kind in ("choice", "grid"):
        return CategoricalDistribution([_choice(v) for v in domain.args])
    low, high = domain.args[0], domain.args[1]
    if domain.kind == "randint":
        return IntDistribution(int(low), int(high) - 1)  # Ray's high is exclusive
    if domain.kind == "quniform":  # Ray rounds to multiples of q, which may fall just outside [low, high]
        q = float(domain.args[2])
        low, high = min(low, round(low / q) * q), max(high, round(high / q) * q)
    return FloatDistribution(float(low), float(high), log=domain.kind == "loguniform")


def _inside(dist: Any, value: Any) -> bool:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return _choice(value) in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return dist.low <= value <= dist.high


def _plain(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


class OptunaMirror(Callback):
    """A Tune callback that keeps an Optuna study equal to the run's record (see the module's docstring).
    ``space``: the job's search space (name -> :class:`~sentune.search.Domain` or a constant)."""

    def __init__(self, recorder: RunRecorder, *, target: str, study: str, direction: Literal["maximize", "minimize"],
                 space: dict,
                 attrs: dict | None = None):  # fmt: skip
        self.recorder, self.target, self.study, self.direction = recorder, target, study, direction
        self.dists = {k: distribution(v) for k, v in space.items() if isinstance(v, Domain)}
        self.attrs = attrs or {}
        self._storage: Any = None
        self._study_id: int | None = None
        self._ids: dict[str, int] = {}  # sweep trial id -> Optuna trial id
        self._warned = False

    def __getstate__(self):  # Tune pickles its callbacks with the Tuner: the storage stays here
        return {**self.__dict__, "_storage": None, "_study_id": None, "_ids": {}}

    # ---- Tune's events (the record has each already) ----

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guarded(revived(trial.trial_id, getattr(trial, "config", None) or {})[0])  # a second chance: the earlier

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guarded(revived(trial.trial_id, getattr(trial, "config", None) or {})[0])  # a second chance: the earlier

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guarded(revived(trial.trial_id, getattr(trial, "config", None) or {})[0])  # a second chance: the earlier

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guarded(revived(trial.trial_id, getattr(trial, "config", None) or {})[0])  # a second chance: the earlier

    # ---- the study ----

    def open(self) -> None:
        """Open the storage and the study (made if new), find the trials it has, and catch up with the record
        (a resumed run's). A storage that cannot be opened is one line (ConfigError)."""
        import optuna

        storage = open_optuna_storage(self.target)
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" under the live screen
        try:
            study = optuna.create_study(storage=storage, study_name=self.study, direction=self.direction,
                                        load_if_exists=True)  # fmt: skip
        finally:
            optuna.logging.set_verbosity(level)
        for key, value in self.attrs.items():
            study.set_user_attr(key, value)
        self._storage, self._study_id = storage, storage.get_study_id_from_name(self.study)
        self._ids = {
            str(t.user_attrs[TRIAL_ID_ATTR]): storage.get_trial_id_from_study_id_trial_number(self._study_id, t.number)
            for t in storage.get_all_trials(self._study_id, deepcopy=False)
            if TRIAL_ID_ATTR in t.user_attrs
        }
        self.sync_all()

    def sync_all(self, *, final: bool = False) -> None:
        """Every trial of the record. ``final`` (the sweep and its confirmations are over): an Optuna trial
        still running whose trial the record does not have (a confirmation run a stop cut short, trained
        again under a new id) fails. (Before that, a trial the record has not written yet may still come back
        from Tune's state: a resumed run's.)"""
        from optuna.trial import TrialState

        for trial_id in self.recorder.trial_ids():
            self.sync(trial_id)
        if not final:
            return
        for trial_id, number in self._ids.items():
            if trial_id not in self.recorder and self._storage.get_trial(number).state == TrialState.RUNNING:
                self._storage.set_trial_user_attr(number, "stop_reason", "dropped from the record")
                self._storage.set_trial_state_values(number, TrialState.FAIL)

    def sync(self, trial_id: str) -> None:
        """Bring the trial's Optuna trial up to the record: made if new, the epochs it lacks, its state."""
        if trial_id not in self.recorder:
            return
        if self._storage is None:
            self.open()  # (a callback unpickled elsewhere); open() syncs this trial too
            return
        storage, row = self._storage, self.recorder.trials[trial_id]
        number = self._ids.get(trial_id)
        if number is None:
            number = self._ids[trial_id] = self._create(trial_id, row)
        frozen = storage.get_trial(number)
        if frozen.state.is_finished():
            return
        metric = self.recorder.metric
        for r in self.recorder.rows_of(trial_id):
            value = r.get(metric)
            if value is None:
                continue
            have = frozen.intermediate_values.get(int(r["epoch"]))
            if have is None or not (have == value or (math.isnan(have) and math.isnan(value))):
                storage.set_trial_intermediate_value(number, int(r["epoch"]), float(value))
        self._set_attrs(number, frozen.user_attrs, row)
        self._finish(number, row)

    def _create(self, trial_id: str, row: dict) -> int:
        import optuna
        from optuna.trial import TrialState

        config = self.recorder.config_of(trial_id)
        params = {k: _choice(config[k]) for k, d in self.dists.items() if k in config and _inside(d, config[k])}
        attrs = {TRIAL_ID_ATTR: trial_id, "role": row.get("role") or "sampled", "config": _plain(config)}
        if row.get("baseline") is not None:
            attrs["baseline"] = int(row["baseline"])
        if row.get("confirm_of"):
            attrs["confirm_of"] = str(row["confirm_of"])
        dists = {k: self.dists[k] for k in params}
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=dists,
                                             user_attrs=attrs)  # fmt: skip
        return self._storage.create_new_trial(self._study_id, template_trial=template)

    def _set_attrs(self, number: int, have: dict, row: dict) -> None:
        config = _plain(self.recorder.config_of(row["trial_id"]))  # PBT goes on with perturbed configs
        want = {"config": config, "epochs_run": int(row.get("epochs_run") or 0)}
        if row.get("peak_epoch") is not None:
            want["peak_epoch"] = int(row["peak_epoch"])
        if row.get("stop_reason"):
            want["stop_reason"] = str(row["stop_reason"])
        if row.get("error"):
            want["error"] = str(row["error"])[:200]
        for key, value in want.items():
            if have.get(key) != value:
                self._storage.set_trial_user_attr(number, key, value)

    def _finish(self, number: int, row: dict) -> None:
        from optuna.trial import TrialState

        status, peak = row.get("status"), row.get("peak_metric")
        values = [float(peak)] if peak is not None and math.isfinite(float(peak)) else None
        if status == STATUS_COMPLETED and values:
            self._storage.set_trial_state_values(number, TrialState.COMPLETE, values)
        elif status == STATUS_STOPPED:  # pruned, its value the peak it reached (Optuna's: the last step's)
            self._storage.set_trial_state_values(number, TrialState.PRUNED, values)
        elif status in (STATUS_ERRORED, STATUS_COMPLETED):  # an error, or a trial with no finite metric
            self._storage.set_trial_state_values(number, TrialState.FAIL)

    def _guarded(self, trial_id: str) -> None:
        try:
            self.sync(trial_id)
        except Exception as exc:  # noqa: BLE001 (the study is a mirror: the sweep goes on, the next event catches up)
            if not self._warned:
                self._warned = True
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                warn(f"optuna study {self.study}: {redact_text(reason)} (the sweep goes on; the study catches up at "
                     "the next event)")  # fmt: skip


def optuna_mirror(plan: SweepPlan, recorder: RunRecorder) -> OptunaMirror | None:
    """The job's mirror, opened and caught up with the record; None when the job asks for none."""
    spec, folder = plan.spec, plan.folder
    target = optuna_target(spec.tracking.optuna, plan.run_dir)
    if target is None:
        return None
    mirror = OptunaMirror(
        recorder,
        target=target,
        study=optuna_study_name(spec.name, folder.run_id),
        direction="maximize" if spec.scheduler.direction.mode == "max" else "minimize",
        space=spec.space,
        attrs={
            "job": spec.name,
            "run": folder.run_id,
            "trainable": spec.trainable,
            "metric": spec.scheduler.metric,
            "run_folder": folder.shown(),
        },
    )
    mirror.open()
    return mirror
