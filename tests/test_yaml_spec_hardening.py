"""What reads a user's YAML (sentune._yaml), the job spec and the search space, given bad input: every
outcome is a loaded spec or a SentuneError of one line (at most 300 characters) naming the file."""

import copy
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sentune._yaml import read_yaml
from sentune.errors import ConfigError, SentuneError
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


def test_keys_that_are_not_strings_are_one_line(tmp_path):
    top = write(tmp_path / "top.yaml", "7: seven\n" + LSTM_HEAD)  # was a TypeError (JobSpec(**raw))
    assert refused(load_job, top) == f"{top}: 7: Keys should be strings"
    nested = write(tmp_path / "nested.yaml", LSTM_HEAD + "search_space: {lr: {1: 2, a: 3}}\n")  # sorted(1, 'a')
    assert "lr: give exactly one of" in refused(load_job, nested)


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


# --- 3. random and mutated documents ----------------------------------------------------------------------------

JOB_FILES = sorted((ROOT / "tune_jobs").glob("*.yaml"))
SPACE_FILES = sorted((ROOT / "search_spaces").glob("*.yaml"))
# the real jobs, their search_space made absolute (the tests run from anywhere)
JOB_DOCS = []
for _path in JOB_FILES:
    _doc = yaml.safe_load(_path.read_text(encoding="utf-8"))
    if isinstance(_doc.get("search_space"), str):
        _doc["search_space"] = str(ROOT / _doc["search_space"])
    JOB_DOCS.append(_doc)
SPACE_DOCS = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in SPACE_FILES]
# a job for each search space file (its trainable and data options)
SPACE_JOBS = {p.name: next(d for d in JOB_DOCS if d.get("search_space") == str(p)) for p in SPACE_FILES}
KEYS = sorted({k for d in JOB_DOCS + SPACE_DOCS for k in d} | {"seed", "lr", "type", "choice", "grid", "<<"})

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["1e-3", "1e", "e5", "1.2.3", "auto", "none", "random:tiny", "random:dim=8", "smollm2",
                     "hf:/nowhere", "~", "yes", "2024-13-01", "0x1F", "1:30", ".inf", "-.nan", "a\u2028b"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
SNIPPETS = [
    "x: &a [*a]\n",  # an alias inside its own anchor
    "params: *nowhere\n",
    "seed: &s 3\nnum_samples: *s\n",
    "params: &p {lr: 1e-3}\nsearch_space: *p\n",
    "l0: &l0 [a, a, a, a, a, a, a, a]\nl1: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]\n"
    "l2: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]\nl3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]\n"
    "l4: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]\nl5: &l5 [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]\n",
    "name: !!python/object/apply:os.system [echo]\n",
    "name: !!binary aGVsbG8=\n",
    "seed: !!int x\n",
    "epochs: !!float [1]\n",
    "7: seven\n",
    "? [a, b]\n: 1\n",
    "--- 1\n",
    "\t- x\n",
    "lr: " + "9" * 5000 + "\n",
    "name: " + "[" * 200 + "\n",
]


def _slots(obj, path=()):
    """Every place in a document: the path of keys and indices to it."""
    yield path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _slots(value, (*path, key))


@st.composite
def mutated_document(draw, bases):
    """One of ``bases`` with 1 to 3 values dropped, replaced (scalars, lists, nested maps) or renamed;
    dumped as YAML; then maybe a line duplicated, a snippet added (aliases, tags, huge numbers), the
    text cut short or random bytes put in."""
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        slots = [p for p in _slots(doc) if p]
        if not slots:
            break
        path = draw(st.sampled_from(slots))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "replace", "replace", "rename"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = parent.pop(key)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([False, None])))  # fmt: skip
    edit = draw(st.sampled_from(["none", "duplicate", "snippet", "truncate", "bytes"]))
    if edit == "duplicate":
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, len(lines) - 1))
        text = "".join(lines[: i + 1] + lines[i:])
    elif edit == "snippet":
        snippet = draw(st.sampled_from(SNIPPETS))
        text = snippet + text if draw(st.booleans()) else text + snippet
    elif edit == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    data = text.encode("utf-8")
    if edit == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("mutated")


def loads_or_one_line(load, path: Path, *names: Path):
    try:
        loaded = load(path)
    except SentuneError as exc:  # any other exception fails the test
        one_line_naming(exc, *(names or (path,)))
        event(f"{getattr(load, '__name__', load)}: refused")
        return None
    event(f"{getattr(load, '__name__', load)}: loaded")
    return loaded


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_document(JOB_DOCS))
def test_mutated_jobs_load_or_fail_in_one_line(scratch, data):
    job = write(scratch / "job.yaml", data)
    loads_or_one_line(load_job, job)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_document(SPACE_DOCS), which=st.sampled_from(sorted(SPACE_JOBS)))
def test_mutated_search_spaces_load_or_fail_in_one_line(scratch, data, which):
    space = write(scratch / "space.yaml", data)
    loaded = loads_or_one_line(load_search_space, space)
    assert loaded is None or isinstance(loaded, dict)
    job = write(scratch / "space_job.yaml", yaml.safe_dump({**SPACE_JOBS[which], "search_space": str(space)}))
    loads_or_one_line(load_job, job)
    if loaded is None:  # a file that does not load fails the job too, naming both files
        with pytest.raises(ConfigError) as exc:
            load_job(job)
        one_line_naming(exc.value, job, space)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), VALUES, max_size=6))
def test_random_jobs_load_or_fail_in_one_line(scratch, doc):
    job = write(scratch / "random_job.yaml", yaml.safe_dump(doc))
    loads_or_one_line(load_job, job)


# --- found by the tests above, outside this change's files: the owners' fixes make these pass ------------------

_LONG = "a" * 5000


@pytest.mark.parametrize(
    "where",
    [
        # sentune/trainables/_backbone_names.py: dim % heads with heads 0; expanduser of an unknown user;
        # a path too long for the file system (is_file raises ENAMETOOLONG)
        'llama: {backbone: "random:dim=64,layers=2,heads=0,vocab=2000"}',
        'llama: {backbone: "hf:~nosuchuser/model"}',
        f'llama: {{backbone: "gguf:{_LONG}"}}',
        # sentune/results/_range.py: the same for lr: {from_range_test: DIR}
        f'lstm: {{lr: {{from_range_test: "{_LONG}"}}}}',
    ],
)
def test_odd_backbones_and_range_test_paths_are_one_line(tmp_path, where):
    kind, params = where.split(": ", 1)
    head = "name: t\ntrainable: llama_torch\ndata: {builtin: en-movie-5}\n" if kind == "llama" else LSTM_HEAD
    job = write(tmp_path / "job.yaml", head + f"search_space: {params}\n")
    with pytest.raises(SentuneError) as info:
        load_job(job)
    one_line_naming(info.value, job)
