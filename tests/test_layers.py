"""Each layer imports only what it needs: checked in a fresh interpreter's ``sys.modules``."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "tensorflow", "keras", "transformers", "ray")


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[1]),
    )
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    "code, allowed",
    [
        # validating a job (what `sentune submit` does before it uploads) loads no deep-learning framework, nor Ray
        (
            "from sentune.spec import load_job\n"
            "load_job('tune_jobs/demo.yaml'); load_job('tune_jobs/weibo_lstm_asha.yaml')",
            set(),
        ),
        # the results package: Parquet, aggregation, report; no Ray, torch or TensorFlow
        ("import sentune.results", set()),
        # the CLI's own module and the trainables' contract and options
        ("import sentune.cli, sentune.trainables, sentune.trainables._lstm_data", set()),
        # the Jobs API client needs Ray's client, nothing of the frameworks
        ("import sentune.submission", {"ray"}),
    ],
)
def test_light_layers_load_no_framework(code, allowed):
    loaded = _modules_after(code)
    assert not (loaded & set(HEAVY)) - allowed, sorted(loaded & set(HEAVY))


def test_validating_a_submission_loads_no_framework(tmp_path):
    """`sentune submit` checks the job and its data before it talks to the cluster: no torch, no TensorFlow."""
    loaded = _modules_after(
        "from sentune.submission import submit_job\n"
        "try:\n"
        "    submit_job('tune_jobs/demo.yaml', address='http://127.0.0.1:9', storage='/nonexistent-shared/x')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    assert not loaded & {"torch", "tensorflow", "keras", "transformers"}


# the argument parser's table reads best whole
_LONG_ALLOWED = {("sentune/cli.py", "build_parser")}


def _functions():
    import ast
    from pathlib import Path

    root = Path(__file__).parents[1]
    for path in sorted((root / "sentune").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield rel, node.name, node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_over_60_lines():
    found = [(rel, name, n) for rel, name, n in _functions() if n > 60 and (rel, name) not in _LONG_ALLOWED]
    assert not found, found
