"""Job specs (``tune_jobs/*.yaml``): validated whole, before Ray starts.

Relative paths in a job (data files, the search-space file, storage) are taken from the
working directory, as a shell user expects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentune._yaml import read_yaml
from sentune.data import DataConfig
from sentune.diagnostics import DiagnosticsConfig
from sentune.errors import ConfigError
from sentune.search import Domain, load_search_space, parse_search_space
from sentune.trainables._registry import get_trainable

__all__ = ["JobSpec", "load_job", "parse_job", "REPORTED_METRICS"]

REPORTED_METRICS = ("val_macro_f1", "val_acc", "val_loss", "train_loss", "train_acc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchConfig(_Strict):
    algorithm: Literal["random", "grid", "optuna"] = "random"


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    metric: str = "val_macro_f1"
    mode: Literal["max", "min"] | None = None
    max_t: int | None = Field(None, gt=0)
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2.0, gt=1.0)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        if v not in REPORTED_METRICS:
            raise ValueError(f"metric must be one of {', '.join(REPORTED_METRICS)}")
        return v

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("min" if self.metric.endswith("loss") else "max")


class ResourcesConfig(_Strict):
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    workers_per_trial: int = Field(1, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _gpu_fraction(self):
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ValueError("gpus above 1 must be a whole number per worker")
        return self


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


class JobSpec(_Strict):
    name: str
    kind: Literal["tune", "lr_range_test"] = "tune"
    trainable: str
    data: DataConfig
    search_space: Path | dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    num_samples: int = Field(1, ge=1)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    storage_path: str = "results"
    seed: int = 0
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

    # filled by parse_job
    _space: dict = {}

    @property
    def space(self) -> dict[str, Domain | Any]:
        """The checked search space: name -> Domain or constant (``params`` merged in)."""
        return self._space

    @property
    def epochs_max(self) -> int:
        value = self._space.get("epochs")
        info = get_trainable(self.trainable)
        if isinstance(value, Domain):
            return int(max(value.extremes()))
        return int(value if value is not None else info.params_model.model_fields["epochs"].default)


def _format_validation(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{source}: {where + ': ' if where else ''}{msg}"


def parse_job(raw: Any, *, source: str = "job") -> JobSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a job must be a YAML mapping")
    try:
        spec = JobSpec(**raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    space = spec.search_space
    if isinstance(space, Path):
        space = load_search_space(space)
    merged = {**space, **spec.params}
    info = get_trainable(spec.trainable)
    params_model = info.params_model
    try:
        parsed = parse_search_space(merged, params_model, fixed_only=params_model.DATA_PARAMS)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    monitor_field = params_model.model_fields.get("monitor")
    if monitor_field is not None and "monitor" not in parsed and spec.scheduler.metric.startswith("val_"):
        parsed["monitor"] = spec.scheduler.metric
    spec._space = parsed
    if spec.scheduler.max_t is not None and spec.scheduler.max_t > spec.epochs_max:
        raise ConfigError(f"{source}: scheduler.max_t ({spec.scheduler.max_t}) exceeds epochs ({spec.epochs_max})")
    if spec.kind == "lr_range_test":
        tuned = sorted(k for k, v in parsed.items() if isinstance(v, Domain))
        if tuned:
            raise ConfigError(f"{source}: an lr range test runs one config; fix {', '.join(tuned)} to a value")
    elif spec.search.algorithm == "grid" and not any(isinstance(d, Domain) for d in parsed.values()):
        raise ConfigError(f"{source}: search.algorithm grid needs at least one grid parameter")
    return spec


def load_job(path: str | Path, *, storage_path: str | None = None) -> JobSpec:
    """Read and check a job file; every problem is a one-line :class:`ConfigError`."""
    raw = read_yaml(path, "job file")
    if storage_path and isinstance(raw, dict):
        raw = {**raw, "storage_path": storage_path}
    return parse_job(raw, source=str(path))
