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

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sentune._yaml import read_yaml
from sentune.errors import ConfigError, format_validation, one_line

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


def _short(value: Any) -> str:
    """A value quoted in a message: its repr, cut at 40 characters."""
    return one_line(repr(value), 40)


def _as_number(where: str, value) -> float:
    """A bound: a finite number (a string such as "1e-3" is read as one)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: bound {value!r} is not a number")
    try:
        number = value if isinstance(value, int) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: bound {_short(value)} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: bound {_short(value)} is not a finite number")
    return number


def _parse_one(where: str, name: str, spec) -> Domain | Any:
    """``where``: the option as messages name it (``search space: lr``)."""
    if not isinstance(spec, Mapping):
        return spec
    kinds = sorted([*RANGE_KINDS, *LIST_KINDS])
    if len(spec) != 1:
        got = ", ".join(sorted(_short(k) for k in spec)) or "none"
        raise ConfigError(f"{where}: give exactly one of {kinds}, got {got}")
    kind, args = next(iter(spec.items()))
    if kind == "from_range_test":
        if name != "lr":
            raise ConfigError(f"{where}: from_range_test applies to lr only")
        if not isinstance(args, str):
            raise ConfigError(f"{where}: from_range_test takes the folder of an lr range test's run")
        from sentune.results import lr_search_range

        return Domain("loguniform", lr_search_range(args))
    if kind in LIST_KINDS:
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list")
        return Domain(kind, tuple(args))
    if kind not in RANGE_KINDS:
        raise ConfigError(f"{where}: unknown domain {_short(kind)}; use one of {kinds}")
    return _range(where, kind, args)


def _range(where: str, kind: str, args) -> Domain:
    """A range domain (``loguniform``, ``uniform``, ``quniform``, ``randint``) with its bounds checked."""
    if not isinstance(args, list) or len(args) != RANGE_KINDS[kind]:
        raise ConfigError(f"{where}: {kind} needs [{'low, high, q' if kind == 'quniform' else 'low, high'}]")
    nums = [_as_number(where, a) for a in args]
    if kind == "randint":
        if not all(float(n).is_integer() for n in nums):
            raise ConfigError(f"{where}: randint bounds must be integers")
        nums = [int(n) for n in nums]
    low, high = nums[0], nums[1]
    if low > high:
        raise ConfigError(f"{where}: low {low} > high {high}")
    if low == high or (kind == "randint" and high - low < 1):
        raise ConfigError(f"{where}: empty range [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low}")
    if kind == "quniform" and nums[2] <= 0:
        raise ConfigError(f"{where}: quniform needs q > 0")
    return Domain(kind, tuple(nums))


def _first_error(exc: ValidationError, name: str) -> str:
    for err in exc.errors():
        if err["loc"] and err["loc"][0] == name:
            return err["msg"]
    return exc.errors()[0]["msg"]


def parse_search_space(
    space: Mapping[str, Any],
    params_model: type[BaseModel],
    *,
    fixed_only: tuple[str, ...] = (),
    source: str = "search space",
) -> dict[str, Domain | Any]:
    """Check a search space against a trainable's option model; return name -> Domain or constant.
    ``source`` starts every message (e.g. ``search space spaces/lstm.yaml``); each is one line."""
    try:
        return _parse_search_space(space, params_model, fixed_only, source)
    except ConfigError as exc:
        raise ConfigError(one_line(str(exc))) from None


def _parse_search_space(
    space: Mapping[str, Any], params_model: type[BaseModel], fixed_only: tuple[str, ...], source: str
) -> dict[str, Domain | Any]:
    if not isinstance(space, Mapping):
        raise ConfigError(f"{source} must be a mapping of option name to value or domain")
    fields = params_model.model_fields
    parsed = {}
    for name, spec in space.items():
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"{source}: unknown parameter {_short(name)} for this trainable; {hint}"
                f"it takes {', '.join(sorted(fields))}"
            )
        parsed[name] = _parse_one(f"{source}: {name}", name, spec)
        if isinstance(parsed[name], Domain) and name in fixed_only:
            raise ConfigError(f"{source}: {name} shapes the shared data and cannot be searched; run one job per value")
    constants = {k: v for k, v in parsed.items() if not isinstance(v, Domain)}
    try:
        params_model(**constants)
    except ValidationError as exc:
        raise ConfigError(format_validation(source, exc)) from None
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
                    f"{source}: {name}: {which} {_short(value)} is invalid: {_first_error(exc, name)}"
                ) from None
    return parsed


def load_search_space(path: str | Path) -> dict:
    """A search-space file's mapping (not yet checked: :func:`parse_search_space` does); a missing,
    empty or bad file is a one-line :class:`ConfigError` naming it."""
    return read_yaml(path, "search space file")
