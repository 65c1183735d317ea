"""Cluster launcher files: offline checks with Ray's own schema."""

from __future__ import annotations

import json
from pathlib import Path

from sentune._yaml import read_yaml
from sentune.errors import ConfigError

__all__ = ["check_cluster_file"]


def check_cluster_file(path: str | Path) -> list[str]:
    """One line per problem Ray's cluster-launcher schema finds (empty: the file is valid)."""
    import jsonschema
    import ray.autoscaler

    config = read_yaml(path, "cluster file")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a cluster file must be a YAML mapping")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    problems = []
    for err in sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.path))):
        prefix = "".join(f"{p}." for p in err.path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = set(err.schema.get("properties", {}))
            problems += [f"{path}: {prefix}{key}: unknown key" for key in sorted(set(err.instance) - known)]
        elif err.validator == "required":
            problems.append(f"{path}: {prefix}{err.message.split(chr(39))[1]}: missing (required)")
        else:
            problems.append(f"{path}: {prefix.rstrip('.') or '(top level)'}: {err.message}")
    return problems
