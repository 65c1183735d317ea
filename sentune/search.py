"""Search spaces (YAML) -> :class:`Domain` values, checked against a trainable's options before Ray
starts. (Turning them into Ray Tune's domains, schedulers and searchers is the Ray layer's:
:mod:`sentune.tuning._factories`.)

A search space maps option names to a constant or to one domain::

    lr:             {loguniform: [1.0e-5, 1.0e-2]}
    hidden_dropout: {uniform: [0.0, 0.5]}
    lr:             {from_range_test: results/my_range_test/<run>}   # centred on its suggestion
    epochs:         {randint: [4, 9]}          # high is exclusive, as in Ray Tune
    warmup_epochs:  {quniform: [0, 2, 0.5]}
    batch_size:     {choice: [16, 32, 64]}
    focal_alpha:    {grid: [none, auto]}
    seed: 0                                    # a constant
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sentune._yaml import read_yaml
from sentune.errors import ConfigError, format_validation

__all__ = ["LIST_KINDS", "RANGE_KINDS", "Domain", "load_search_space", "parse_search_space"]

RANGE_KINDS = {"loguniform": 2, "uniform": 2, "quniform": 3, "randint": 2}
LIST_KINDS = ("choice", "grid")


@dataclass(frozen=True)
class Domain:
    kind: str
    args: tuple

    def extremes(self) -> list:
        """The values that must be valid options: both bounds, or every listed value."""
        if self.kind in LIST_KINDS:
            return list(self.args)
        low, high = self.args[0], self.args[1]
        return [low, high - 1 if self.kind == "randint" else high]


def _as_number(name: str, value) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"search space: {name}: bound {value!r} is not a number")
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise ConfigError(f"search space: {name}: bound {value!r} is not a number") from None


def _parse_one(name: str, spec) -> Domain | Any:
    if not isinstance(spec, Mapping):
        return spec
    if len(spec) != 1:
        raise ConfigError(
            f"search space: {name}: give exactly one of {sorted([*RANGE_KINDS, *LIST_KINDS])}, got {sorted(spec)}"
        )
    kind, args = next(iter(spec.items()))
    if kind == "from_range_test":
        if name != "lr":
            raise ConfigError(f"search space: {name}: from_range_test applies to lr only")
        from sentune.results import lr_search_range

        return Domain("loguniform", lr_search_range(args))
    if kind in LIST_KINDS:
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search space: {name}: {kind} needs a non-empty list")
        return Domain(kind, tuple(args))
    if kind not in RANGE_KINDS:
        raise ConfigError(
            f"search space: {name}: unknown domain {kind!r}; use one of {sorted([*RANGE_KINDS, *LIST_KINDS])}"
        )
    if not isinstance(args, list) or len(args) != RANGE_KINDS[kind]:
        raise ConfigError(
            f"search space: {name}: {kind} needs [{'low, high, q' if kind == 'quniform' else 'low, high'}]"
        )
    nums = [_as_number(name, a) for a in args]
    if kind == "randint":
        if not all(float(n).is_integer() for n in nums):
            raise ConfigError(f"search space: {name}: randint bounds must be integers")
        nums = [int(n) for n in nums]
    low, high = nums[0], nums[1]
    if low > high:
        raise ConfigError(f"search space: {name}: low {low} > high {high}")
    if low == high or (kind == "randint" and high - low < 1):
        raise ConfigError(f"search space: {name}: empty range [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"search space: {name}: loguniform needs low > 0, got {low}")
    if kind == "quniform" and nums[2] <= 0:
        raise ConfigError(f"search space: {name}: quniform needs q > 0")
    return Domain(kind, tuple(nums))


def _first_error(exc: ValidationError, name: str) -> str:
    for err in exc.errors():
        if err["loc"] and err["loc"][0] == name:
            return err["msg"]
    return exc.errors()[0]["msg"]


def parse_search_space(
    space: Mapping[str, Any], params_model: type[BaseModel], *, fixed_only: tuple[str, ...] = ()
) -> dict[str, Domain | Any]:
    """Check a search space against a trainable's option model; return name -> Domain or constant."""
    if not isinstance(space, Mapping):
        raise ConfigError("search space must be a mapping of option name to value or domain")
    fields = params_model.model_fields
    parsed = {}
    for name, spec in space.items():
        if name not in fields:
            raise ConfigError(
                f"search space: unknown parameter {name!r} for this trainable; it takes {', '.join(sorted(fields))}"
            )
        parsed[name] = _parse_one(name, spec)
        if isinstance(parsed[name], Domain) and name in fixed_only:
            raise ConfigError(
                f"search space: {name} shapes the shared data and cannot be searched; run one job per value"
            )
    constants = {k: v for k, v in parsed.items() if not isinstance(v, Domain)}
    try:
        params_model(**constants)
    except ValidationError as exc:
        raise ConfigError(format_validation("search space", exc)) from None
    for name, dom in parsed.items():
        if not isinstance(dom, Domain):
            continue
        for value in dom.extremes():
            try:
                params_model(**{**constants, name: value})
            except ValidationError as exc:
                which = (
                    "value"
                    if dom.kind in LIST_KINDS
                    else ("upper bound" if value == dom.extremes()[1] else "lower bound")
                )
                raise ConfigError(
                    f"search space: {name}: {which} {value!r} is invalid: {_first_error(exc, name)}"
                ) from None
    return parsed


def load_search_space(path: str | Path) -> dict:
    return read_yaml(path, "search space file") or {}
