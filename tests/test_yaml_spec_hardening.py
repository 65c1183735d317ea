"""What reads a user's YAML (sentune._yaml), the job spec and the search space, given bad input: every
outcome is a loaded spec or a SentuneError of one line (at most 300 characters) naming the file."""

import time
from pathlib import Path

import pytest
import yaml

from sentune._yaml import read_yaml
from sentune.errors import ConfigError
from sentune.search import Domain, load_search_space
from sentune.spec import load_job

ROOT = Path(__file__).resolve().parents[1]
LSTM_HEAD = "name: t\ntrainable: lstm_tf\ndata: {builtin: zh-reviews}\nnum_samples: 2\n"


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def one_line_naming(exc: BaseException, *paths: Path) -> str:
    msg = str(exc)
    assert len(msg.splitlines()) == 1 and "\n" not in msg and "\u2028" not in msg, repr(msg)
    assert len(msg) <= 300, f"{len(msg)} characters: {msg[:400]!r}"
    for path in paths:
        assert str(path) in msg, msg
    return msg


def refused(load, path: Path, *names: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return one_line_naming(exc.value, *(names or (path,)))


# --- 1. the loader --------------------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused_with_its_line_and_column(tmp_path):
    job = write(tmp_path / "job.yaml", LSTM_HEAD + "params:\n  lr: 1.0e-3\n  epochs: 2\n  lr: 1.0e-2\n")
    assert refused(load_job, job) == f"{job}:8:3: duplicate key 'lr'"
    flow = write(tmp_path / "flow.yaml", LSTM_HEAD + "seed: 1\nscheduler: {type: asha, type: fifo}\n")
    assert refused(load_job, flow) == f"{flow}:6:25: duplicate key 'type'"
    # a merge key's mapping may be overridden by the mapping's own keys: not a duplicate
    merged = write(tmp_path / "merged.yaml", LSTM_HEAD + "params:\n  <<: {lr: 1.0e-3, epochs: 2}\n  lr: 2.0e-3\n")
    assert load_job(merged).space["lr"] == 2.0e-3


def test_yaml_12_exponent_floats_are_floats_and_look_alikes_stay_strings(tmp_path):
    f = write(
        tmp_path / "values.yaml",
        "a: 1e-3\nb: 1E5\nc: -2.5e-4\nd: +1e3\ne: 1.0e3\nf: .5e2\ng: 1e\nh: e5\ni: 1.2.3\nj: 7\nk: 1.5\nl: '1e-3'\n",
    )
    got = read_yaml(f, "test file")
    assert got == {"a": 1e-3, "b": 1e5, "c": -2.5e-4, "d": 1e3, "e": 1e3, "f": 50.0,
                   "g": "1e", "h": "e5", "i": "1.2.3", "j": 7, "k": 1.5, "l": "1e-3"}  # fmt: skip
    assert [k for k, v in got.items() if type(v) is float] == ["a", "b", "c", "d", "e", "f", "k"]


def test_lr_1e_3_stays_a_float_through_the_job_and_its_search_space(tmp_path):
    space = write(
        tmp_path / "space.yaml", "lr: {choice: [1e-3, 1e-4]}\nweight_decay: 1e-5\nl2: {loguniform: [1e-6, 1e-4]}\n"
    )
    job = write(
        tmp_path / "job.yaml",
        LSTM_HEAD + f"search_space: '{space}'\nparams: {{dropout: 2e-1}}\nbaselines: [{{lr: 0.001}}]\n",
    )
    spec = load_job(job)
    assert spec.space["lr"] == Domain("choice", (0.001, 0.0001))
    assert [type(v) for v in spec.space["lr"].args] == [float, float]
    assert type(spec.space["weight_decay"]) is float and spec.space["weight_decay"] == 1e-5
    assert type(spec.space["dropout"]) is float and spec.space["dropout"] == 0.2
    assert spec.space["l2"] == Domain("loguniform", (1e-6, 1e-4))
    assert spec.baseline_configs == [{"lr": 0.001, "l2": 1e-4}]  # the choice takes the float 0.001 (l2: its default)
    # a best_config.yaml written from these values (yaml.safe_dump) reads back as floats
    back = read_yaml(write(tmp_path / "best.yaml", yaml.safe_dump({"params": spec.constants})), "config file")
    assert back["params"] == {"weight_decay": 1e-5, "dropout": 0.2, "monitor": "val_macro_f1"}


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("params:\n  lr: [1, 2\n  epochs: 3\n", "7:9", "expected ',' or ']', but got ':'"),
        ("params:\n\tlr: 1\n", "6:1", "found character '\\t' that cannot start any token"),
        ("scheduler: type: asha\n", "5:16", "mapping values are not allowed here"),
    ],
)
def test_a_yaml_error_names_the_file_line_and_column(tmp_path, text, where, problem):
    job = write(tmp_path / "job.yaml", LSTM_HEAD + text)
    assert refused(load_job, job) == f"{job}:{where}: not valid YAML: {problem}"


def test_an_alias_bomb_is_refused_fast_in_one_short_line(tmp_path):
    """A few hundred bytes that expand to 9**8 strings (43 million): the anchors sit in a baseline, the
    search space's choice refers to the biggest, whose repr alone would take gigabytes."""
    levels = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 8)]
    job = write(tmp_path / "job.yaml", LSTM_HEAD + f"baselines: [{{dropout: [{', '.join(levels)}]}}]\n"
                "search_space: {dropout: {choice: [*l7]}}\n")  # fmt: skip
    assert job.stat().st_size < 800
    start = time.monotonic()
    msg = refused(load_job, job)
    assert time.monotonic() - start < 1.0
    assert "expands to more than" in msg


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "is empty"),
        (b"# nothing here\n", "is empty"),
        (b"- lr\n- epochs\n", "must be a YAML mapping (key: value lines), not a list"),
        (b"just words\n", "must be a YAML mapping (key: value lines), not a string"),
        (b"lr: {choice: [0.1]}\n# caf\xe9\n", ":2: not UTF-8 text (byte 0xe9"),
        (b"lr: {choice: [0.1]}\nepochs: 2\x00\n", ":2: holds a NUL byte"),
        (b"lr: {choice: [0.1]}\nepochs: \x07\n", ":2:9: not valid YAML: unacceptable character #x0007"),
    ],
)
def test_an_empty_binary_or_non_mapping_file_is_one_line_naming_it(tmp_path, data, fragment):
    space = write(tmp_path / "space.yaml", data)
    assert fragment in refused(load_search_space, space)
    job = write(tmp_path / "job.yaml", LSTM_HEAD + f"search_space: '{space}'\n")
    assert fragment in refused(load_job, job, job, space)
    as_job = write(tmp_path / "as_job.yaml", data)
    assert fragment in refused(load_job, as_job)


def test_quoted_keys_and_values_are_cut_short(tmp_path):
    long_key = "x" * 1000  # (YAML caps a plain key at 1024 characters)
    dup = write(tmp_path / "dup.yaml", LSTM_HEAD + f"params:\n  {long_key}: 1\n  {long_key}: 2\n")
    assert "duplicate key 'xxxx" in refused(load_job, dup)
    unknown = write(tmp_path / "unknown.yaml", LSTM_HEAD + 'scheduler: {"a\\u2028b\\nc\\x1bd": 1}\n')
    assert "scheduler.a b c\\x1bd: unknown key" in refused(load_job, unknown)
    long_unknown = write(tmp_path / "long_unknown.yaml", LSTM_HEAD + f"params: {{{long_key}: 1}}\n")
    assert "unknown parameter 'xxx" in refused(load_job, long_unknown)
    long_value = write(tmp_path / "long_value.yaml", LSTM_HEAD + f"params: {{dropout: {{choice: ['{long_key}']}}}}\n")
    assert "dropout: value 'xxx" in refused(load_job, long_value)


# --- 2. seeds -------------------------------------------------------------------------------------------------

BAD_SEEDS = ["-1", "1180591620717411303424", "true", "1.5"]  # -1, 2**70, a boolean, a fraction


@pytest.mark.parametrize("seed", BAD_SEEDS)
@pytest.mark.parametrize(
    "where", ["seed: {}\n", "params: {{seed: {}}}\n", "search_space: {{seed: {{choice: [1, {}]}}}}\n"]
)
def test_a_seed_outside_0_to_2_to_the_32_is_refused(tmp_path, seed, where):
    job = write(tmp_path / "job.yaml", LSTM_HEAD + where.format(seed))
    assert "seed" in refused(load_job, job)


@pytest.mark.parametrize("seed", ["0", "4294967295"])
def test_seeds_in_range_are_taken(tmp_path, seed):
    job = write(tmp_path / "job.yaml", LSTM_HEAD + f"seed: {seed}\nparams: {{seed: {seed}}}\n")
    spec = load_job(job)
    assert spec.seed == int(seed) == spec.space["seed"]
