"""Job specs (``tune_jobs/*.yaml``): validated whole, before Ray starts.

Relative paths in a job (data files, the search-space file, storage) are taken from the
working directory, as a shell user expects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from sentune._direction import Direction
from sentune._yaml import read_yaml
from sentune.data import DataConfig
from sentune.diagnostics import DiagnosticsConfig
from sentune.errors import ConfigError, format_validation, one_line
from sentune.search import Domain, load_search_space, parse_search_space
from sentune.trainables import get_trainable
from sentune.trainables._params import Seed

__all__ = [
    "ConfirmConfig",
    "FailureConfig",
    "JobSpec",
    "REPORTED_METRICS",
    "StopConfig",
    "WarmStartConfig",
    "load_job",
    "parse_job",
    "pbt_can_perturb",
]

_UNSET = object()
REPORTED_METRICS = ("val_macro_f1", "val_acc", "val_loss", "train_loss", "train_acc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchConfig(_Strict):
    algorithm: Literal["random", "grid", "optuna"] = "random"
    multivariate: bool = False  # optuna: multivariate TPE (the joint density of the options, not one each)

    @model_validator(mode="after")
    def _multivariate(self):
        if self.multivariate and self.algorithm != "optuna":
            raise ValueError(f"multivariate applies to algorithm optuna (TPE), not {self.algorithm}")
        return self


def pbt_can_perturb(name: str) -> bool:
    """Options PBT may change in the middle of a trial: the learning rate, weight decay and dropouts."""
    return name in ("lr", "weight_decay") or "dropout" in name


class SecondChanceConfig(_Strict):
    """After an ASHA sweep (before ``confirm``), with up to ``budget`` times the epochs early stopping saved,
    the stopped trials whose forecast's upper bound beats the best go on from their resume checkpoints, most
    promising first, one rung at a time."""

    budget: float = Field(0.25, gt=0, le=1)


class SchedulerConfig(_Strict):
    """``asha`` (default), ``hyperband`` (asynchronous HyperBand: ASHA brackets of several grace periods),
    ``median`` (median stopping rule), ``pbt`` (population based training), ``fifo`` (no early stop)."""

    type: Literal["asha", "fifo", "hyperband", "median", "pbt"] = "asha"
    metric: str = "val_macro_f1"
    mode: Literal["max", "min"] | None = None
    max_t: int | None = Field(None, gt=0)
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2.0, gt=1.0)
    perturbation_interval: int = Field(2, gt=0)  # pbt: epochs between exploit/explore steps
    # asha / hyperband: rungs compare each trial's learning-curve forecast at max_t instead of its metric now
    promote_on: Literal["metric", "forecast"] = "metric"
    # asha / hyperband: after the sweep, stopped trials whose forecast could beat the best go on (see SecondChance)
    second_chance: SecondChanceConfig | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        if v not in REPORTED_METRICS:
            raise ValueError(f"metric must be one of {', '.join(REPORTED_METRICS)}")
        return v

    @model_validator(mode="after")
    def _early_stopping_options(self):
        for name, set_ in (("promote_on", self.promote_on != "metric"), ("second_chance", self.second_chance)):
            if set_ and self.type not in ("asha", "hyperband"):
                raise ValueError(f"{name} applies to the asha and hyperband schedulers, not {self.type}")
        return self

    @property
    def direction(self) -> Direction:
        return Direction.of(self.metric, self.mode)


class ResourcesConfig(_Strict):
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    workers_per_trial: int = Field(1, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    memory_gb: float | None = Field(None, gt=0)  # per worker: Ray reserves it (logical, as CPUs and GPUs)
    # where a trial's workers go (Ray placement-group strategies): all on as few nodes as fit (pack), or one
    # per node where there are enough nodes (spread); both soft, as in Ray
    placement: Literal["pack", "spread"] = "pack"

    @model_validator(mode="after")
    def _gpu_fraction(self):
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ValueError("gpus above 1 must be a whole number per worker")
        return self


class FailureConfig(_Strict):
    """What a trial survives, and how much of it a failure may cost: a trial (or its worker group) whose
    process or node dies is retried up to ``max_failures`` times and goes on from its resume checkpoint,
    written after every ``checkpoint_every_epochs``-th epoch (and every ``checkpoint_every_steps``
    optimizer steps inside an epoch, for long epochs), but not within ``checkpoint_min_interval_s`` of the
    trial's start or its last one (always after its last epoch): epochs of a fraction of a second are not
    each worth a state file, and a failure repeats at most that much training. Only the latest resume
    checkpoint is kept. A job with second chances writes one after every due epoch (a revived trial goes on
    from where it stopped)."""

    max_failures: int = Field(3, ge=0)
    checkpoint_every_epochs: int = Field(1, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    checkpoint_min_interval_s: float = Field(10.0, ge=0)


class MlflowConfig(_Strict):
    tracking_uri: str  # an MLflow server (http://...), a database (sqlite:///...), or a file store (file:/...)
    experiment: str | None = None  # default: the job's name


class TrackingConfig(_Strict):
    """The trackers a user already runs: every trial's config and epoch metrics go there too."""

    tensorboard: bool = False  # event files under <run>/tune/<trial>/ (`tensorboard --logdir <run>/tune`)
    mlflow: MlflowConfig | None = None
    # an Optuna study mirroring the sweep: true (a journal file in the run folder), a database URL Optuna takes
    # (sqlite:///..., postgresql://...), or the path of a journal file
    optuna: bool | str = False

    @field_validator("optuna", mode="before")
    @classmethod
    def _optuna(cls, v):
        if isinstance(v, bool) or v is None:
            return bool(v)
        if not isinstance(v, str) or not v.strip():
            raise ValueError("optuna takes true, false, a database URL (sqlite, postgresql, mysql) or a journal's path")
        if "://" in v and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://.*", v):
            raise ValueError("a database URL starts with its scheme, as in postgresql://host/db")
        if v.startswith("redis"):
            raise ValueError("a Redis storage is not supported; give a database URL or a journal file path")
        return v


class ConfirmConfig(_Strict):
    """After the sweep, train the ``top_k`` configs again with ``seeds`` fresh seeds each, for their full
    epochs; the best config is then the one with the best mean of its confirmations."""

    top_k: int = Field(3, ge=1)
    seeds: int = Field(3, ge=1)


class WarmStartConfig(_Strict):
    """``warm_start:``: earlier runs (folders or URIs) of the same trainable and metric whose trials seed the
    search: TPE learns from all of them; random and grid run the ``top_k`` best first (role ``warm_start``).
    A plain list is the runs."""

    runs: list[str] = Field(min_length=1)
    top_k: int = Field(3, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, value):
        return {"runs": value} if isinstance(value, list) else value


class RangeTestConfig(_Strict):
    lr_min: float = Field(1e-7, gt=0)
    lr_max: float = Field(1e-2, gt=0)
    steps: int = Field(100, ge=10)
    diverge_factor: float = Field(4.0, gt=1)

    @model_validator(mode="after")
    def _order(self):
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        return self


class StopConfig(_Strict):
    """``stop:``: the sweep ends itself (status ``finished``; the trials it cut stop with ``stop_reason: study``)
    when ``patience_trials`` trials in a row ended without beating the best by ``min_improvement``, after
    ``max_wall_seconds``, or once a trial's metric reaches ``target``."""

    patience_trials: int | None = Field(None, gt=0)
    min_improvement: float = Field(0.0, ge=0)
    max_wall_seconds: float | None = Field(None, gt=0)
    target: float | None = None

    @model_validator(mode="after")
    def _some(self):
        if self.patience_trials is None and self.max_wall_seconds is None and self.target is None:
            raise ValueError("stop needs patience_trials, max_wall_seconds or target")
        return self


class JobSpec(_Strict):
    name: str
    kind: Literal["tune", "lr_range_test"] = "tune"
    trainable: str
    data: DataConfig
    search_space: Path | dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    num_samples: int = Field(1, ge=0)  # sampled trials; 0 with baselines: run only the baselines
    # hand-picked configs (values of the tuned options; one left out takes the trainable's default), run first
    baselines: list[dict[str, Any]] = Field(default_factory=list)
    confirm: ConfirmConfig | None = None
    # end the sweep once its trials have trained this many epochs in total (the baselines' included)
    max_total_epochs: int | None = Field(None, gt=0)
    stop: StopConfig | None = None  # the sweep ends itself when it stops improving, runs long, or hits a target
    warm_start: WarmStartConfig | None = None  # earlier runs whose trials seed the search
    reference: bool = True  # fit the TF-IDF + logistic regression reference model once per job
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    failure: FailureConfig = Field(default_factory=FailureConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage_path: str = "results"
    seed: Seed = 0  # the searcher's and the reference model's: a whole number in [0, 2**32)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    range_test: RangeTestConfig = Field(default_factory=RangeTestConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("name may hold letters, digits, '_', '.', '-' only")
        return v

    @field_validator("trainable")
    @classmethod
    def _trainable(cls, v):
        get_trainable(v)
        return v

    _space: dict = PrivateAttr(default_factory=dict)
    _baselines: list = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _parse_space(self):
        """The search space, read (from its file), merged with ``params`` and checked against the
        trainable's options; a ConfigError names the problem."""
        if isinstance(self.search_space, Path):
            space = load_search_space(self.search_space)
            source = f"search space {self.search_space}{' + params' if self.params else ''}"
        else:
            space, source = self.search_space, "search space"
        params_model = get_trainable(self.trainable).params_model
        parsed = parse_search_space(
            {**space, **self.params}, params_model, fixed_only=params_model.DATA_PARAMS, source=source
        )
        if (
            "monitor" in params_model.model_fields
            and "monitor" not in parsed
            and self.scheduler.metric.startswith("val_")
        ):
            parsed["monitor"] = self.scheduler.metric
        self._space = parsed
        if self.scheduler.max_t is not None and self.scheduler.max_t > self.epochs_max:
            raise ConfigError(f"scheduler.max_t ({self.scheduler.max_t}) exceeds epochs ({self.epochs_max})")
        if self.kind == "lr_range_test":
            tuned = sorted(k for k, v in parsed.items() if isinstance(v, Domain))
            if tuned:
                raise ConfigError(f"an lr range test runs one config; fix {', '.join(tuned)} to a value")
            if self.baselines or self.confirm is not None:
                raise ConfigError("an lr range test runs one config; baselines and confirm apply to tune jobs")
        else:
            self._check_search(parsed)
            self._baselines = self._check_baselines(parsed, params_model)
            self._check_pbt(parsed)
            if self.num_samples + len(self.baselines) == 0:
                raise ConfigError("num_samples is 0 and there are no baselines: nothing to run")
            if self.confirm is not None and self.confirm.top_k > self.trial_count:
                raise ConfigError(f"confirm.top_k ({self.confirm.top_k}) exceeds the trial count ({self.trial_count})")
        return self

    def _check_baselines(self, parsed: dict, params_model) -> list[dict]:
        """Each baseline as a full config of the tuned options (a left-out one: the trainable's default),
        checked against the trainable; one line names the first problem."""
        domains = {k: v for k, v in parsed.items() if isinstance(v, Domain)}
        out = []
        for i, given in enumerate(self.baselines, 1):
            unknown = sorted(set(given) - set(params_model.model_fields))
            if unknown:
                raise ConfigError(f"baselines[{i}]: {self.trainable} has no option {', '.join(unknown)}")
            fixed = sorted(k for k, v in given.items() if k not in domains and parsed.get(k, _UNSET) != v)
            if fixed:
                k = fixed[0]
                now = f"fixed at {parsed[k]!r}" if k in parsed else "not tuned"
                raise ConfigError(
                    f"baselines[{i}]: {k} is {now} in this job; a baseline sets the tuned options "
                    f"({', '.join(domains) or 'none'}): tune {k} or leave it out"
                )
            full = {}
            for k, dom in domains.items():
                value = given[k] if k in given else params_model.model_fields[k].default
                if dom.kind in ("choice", "grid") and value not in dom.args:
                    what = f"{value!r} is not" if k in given else f"is left out and its default {value!r} is not"
                    raise ConfigError(f"baselines[{i}]: {k} {what} one of the space's values {list(dom.args)}")
                full[k] = value
            try:
                params_model(**{**self.constants_of(parsed), **full})
            except ValidationError as exc:
                raise ConfigError(format_validation(f"baselines[{i}]", exc)) from None
            out.append(full)
        return out

    def _check_pbt(self, parsed: dict) -> None:
        if self.scheduler.type != "pbt":
            return
        tuned = [k for k, v in parsed.items() if isinstance(v, Domain)]
        fixed = [k for k in tuned if not pbt_can_perturb(k)]
        if fixed:
            raise ConfigError(
                f"scheduler pbt changes options in the middle of a trial; it cannot change {', '.join(fixed)} "
                "(only lr, weight_decay and dropouts): fix them or use another scheduler"
            )
        if not tuned:
            raise ConfigError("scheduler pbt needs at least one tuned option (lr, weight_decay or a dropout)")
        if self.resources.workers_per_trial != 1:
            raise ConfigError("scheduler pbt runs one-worker trials (workers_per_trial: 1)")
        if self.search.algorithm != "random":
            raise ConfigError(f"scheduler pbt samples its population itself: use search.algorithm random, not "
                              f"{self.search.algorithm}")  # fmt: skip
        grids = [k for k in tuned if parsed[k].kind == "grid"]
        if grids:
            raise ConfigError(f"scheduler pbt: {', '.join(grids)}: a grid cannot be perturbed; use choice")

    @staticmethod
    def constants_of(parsed: dict) -> dict:
        return {k: v for k, v in parsed.items() if not isinstance(v, Domain)}

    def _check_search(self, parsed: dict) -> None:
        domains = {k: v for k, v in parsed.items() if isinstance(v, Domain)}
        if self.search.algorithm == "grid":
            if not domains:
                raise ConfigError("search.algorithm grid needs at least one grid parameter")
            bad = sorted(k for k, d in domains.items() if d.kind != "grid")
            if bad:
                raise ConfigError(
                    f"search.algorithm grid: every tuned parameter must be a grid; {', '.join(bad)} are not"
                )
        if self.search.algorithm == "optuna" and any(d.kind == "grid" for d in domains.values()):
            raise ConfigError("search.algorithm optuna: grid domains are not supported; use choice")

    @property
    def space(self) -> dict[str, Domain | Any]:
        """The checked search space: name -> Domain or constant (``params`` merged in)."""
        return self._space

    @property
    def tuned(self) -> list[str]:
        return [k for k, v in self._space.items() if isinstance(v, Domain)]

    @property
    def constants(self) -> dict[str, Any]:
        return {k: v for k, v in self._space.items() if not isinstance(v, Domain)}

    @property
    def baseline_configs(self) -> list[dict]:
        """The baselines as full configs of the tuned options, in the job's order."""
        return [dict(b) for b in self._baselines]

    @property
    def trial_count(self) -> int:
        """How many trials the sweep runs: the baselines, then ``num_samples`` times the grid's size."""
        grid = 1
        for dom in self._space.values():
            if isinstance(dom, Domain) and dom.kind == "grid":
                grid *= len(dom.args)
        return len(self.baselines) + self.num_samples * grid

    @property
    def epochs_max(self) -> int:
        value = self._space.get("epochs")
        if isinstance(value, Domain):
            return int(max(value.extremes()))
        default = get_trainable(self.trainable).params_model.model_fields["epochs"].default
        return int(value if value is not None else default)


def parse_job(raw: Any, *, source: str = "job") -> JobSpec:
    """A checked :class:`JobSpec` from a mapping; every problem is a one-line :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError(one_line(f"{source}: a job must be a YAML mapping"))
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation(source, exc)) from None
    except ConfigError as exc:
        raise ConfigError(one_line(f"{source}: {exc}")) from None


def load_job(path: str | Path, *, storage_path: str | None = None) -> JobSpec:
    """Read and check a job file; every problem is a one-line :class:`ConfigError` naming it."""
    raw = read_yaml(path, "job file")
    if storage_path:
        raw = {**raw, "storage_path": storage_path}
    return parse_job(raw, source=str(path))
