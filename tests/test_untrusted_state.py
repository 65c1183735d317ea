"""A run folder from someone else is data, never code: the resume store checks its ``LATEST`` pointer and reads
states with :mod:`sentune._safe_state` (no pickle), and torch checkpoints load with ``weights_only=True``."""

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from sentune._safe_state import StateFormatError, dumps, loads
from sentune.errors import SentuneError
from sentune.trainables._resume import TRAIN_STATE_FILE, ResumeState, ResumeStore, read_train_state, write_train_state


class _Plant:
    """Unpickling this creates ``path``: the proof that a file's code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted(sentinel: Path) -> bytes:
    return pickle.dumps({"epoch": 3, "payload": _Plant(sentinel)})


def test_a_crafted_latest_neither_reads_nor_removes_anything_outside_the_run(tmp_path):
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    sentinel = tmp_path / "code-ran"
    for name in ("rank-0.pkl", "rank-0.state"):
        (outside / name).write_bytes(_crafted(sentinel))
    trial = tmp_path / "run" / "resume" / "t1"
    trial.mkdir(parents=True)
    (trial / "LATEST").write_text("../../../victim")  # resume/t1/../../../victim == tmp_path/victim
    store = ResumeStore(str(trial))

    assert store.latest() is None and store.next_epoch() == 1
    assert store.load(0) is None and store.history() == []
    store.save({"epoch": 1}, epoch=1, step=4, rank=0, barrier=lambda: None)  # replaces LATEST, removes "old"

    assert not sentinel.exists()
    assert (outside / "keep.txt").read_text() == "precious"  # the old state "folder" was not deleted
    assert store.latest() == "state-000001-000000004" and store.load(0) == {"epoch": 1}


def test_a_crafted_state_file_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "code-ran"
    trial = tmp_path / "t1"
    (trial / "state-000002-000000010").mkdir(parents=True)
    (trial / "LATEST").write_text("state-000002-000000010")
    (trial / "state-000002-000000010" / "rank-0.state").write_bytes(_crafted(sentinel))
    with pytest.raises(StateFormatError, match="rank-0.state: not a readable sentune train state"):
        ResumeStore(str(trial)).load(0)
    assert not sentinel.exists()


def test_a_pbt_checkpoint_state_is_parsed_not_unpickled(tmp_path):
    sentinel = tmp_path / "code-ran"
    (tmp_path / TRAIN_STATE_FILE).write_bytes(_crafted(sentinel))
    (tmp_path / "train-state.pkl").write_bytes(_crafted(sentinel))  # the old name is not read at all
    with pytest.raises(SentuneError, match="not a readable sentune train state"):
        read_train_state(tmp_path)
    assert not sentinel.exists()
    state = ResumeState(epoch=2, pos=0, step=8, partial=None, history=[{"epoch": 1}], best_value=0.5, best_epoch=1,
                        best_state=None, train={"model": [np.arange(3.0)]})  # fmt: skip
    write_train_state(tmp_path, state)
    back = read_train_state(tmp_path)
    assert back is not None and back.epoch == 2 and np.array_equal(back.train["model"][0], np.arange(3.0))


def test_states_round_trip_torch_numpy_and_rng_states_exactly():
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),  # int keys, tuples (betas), tensors
        "rng": torch.get_rng_state(),
        "bf16": torch.arange(4, dtype=torch.bfloat16),
        "py": random.getstate(),
        "legacy_np": np.random.get_state(),
        "history": [{"val_loss": float("nan"), "epoch": 1}],
        "raw": b"\x00\x01",
        "partial": None,
    }
    back = loads(dumps(state))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["optimizer"]["state"]) == {0, 1}
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    assert torch.equal(back["rng"], state["rng"]) and back["bf16"].dtype == torch.bfloat16
    assert torch.equal(back["bf16"], state["bf16"])
    random.setstate(back["py"])  # takes only a tuple of the right shape
    np.random.set_state(back["legacy_np"])
    assert np.isnan(back["history"][0]["val_loss"]) and back["raw"] == b"\x00\x01"
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(back["optimizer"])


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04junk", pickle.dumps([1, 2]), b"\x93NUMPY" + b"\x00" * 20])
def test_anything_but_a_state_is_one_state_format_error(data):
    with pytest.raises(StateFormatError) as info:
        loads(data, "some/file")
    assert "\n" not in str(info.value) and str(info.value).startswith("some/file: ")


def _crafted_v2(table: list, tree=None, body: bytes = b"\x00" * 64) -> bytes:
    """A file of the current format with the header's array table as given."""
    import json

    from sentune._safe_state import _ALIGN, _HEAD, MAGIC

    header = json.dumps({"format": MAGIC, "state": tree if tree is not None else {"__array__": 0}, "arrays": table})
    head = _HEAD + len(header).to_bytes(8, "little") + header.encode()
    return head + b"\x00" * (-len(head) % _ALIGN) + body


@pytest.mark.parametrize(
    "table",
    [
        [["|O", [1], 0, 8]],  # an object array: refused before anything is built from it
        [["V8", [1], 0, 8]],  # a structured record
        [["<f4", [4], 0, 16], ["<f4", [4], 60, 16]],  # the second array's bytes run past the file (tree: a0)
        [["<f4", [1000], 0, 4000]],  # more data than the file holds
        [["<f4", [3], 0, 16]],  # a shape that does not match its length
        [["<f4", [-1], 0, 4]],  # a negative shape
        [["<f4", "4", 0, 16]],  # a shape that is not a list
        "not a table",
        [],  # the tree names an array the table lacks
    ],
)
def test_a_crafted_array_table_is_one_state_format_error(table):
    tree = {"__array__": 1} if isinstance(table, list) and len(table) == 2 else None
    with pytest.raises(StateFormatError) as info:
        loads(_crafted_v2(table, tree), "f")
    assert "\n" not in str(info.value)


def test_a_state_of_the_first_format_still_loads():
    """Resume states written before the current format (a numpy .npz with the tree in ``__tree__``) go on."""
    import io
    import json

    from sentune._safe_state import MAGIC

    tree = {"format": MAGIC, "state": {"w": {"__array__": 0}, "epoch": 3}}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, a0=np.arange(6.0).reshape(2, 3),
             __tree__=np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8))  # fmt: skip
    back = loads(buf.getvalue())
    assert back["epoch"] == 3 and back["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_the_current_format_keeps_shapes_dtypes_and_empty_arrays():
    state = {"a": np.zeros((0, 3), np.int64), "b": np.array(2.5), "c": np.ones((2, 2), bool)[:, :1], "d": b""}
    back = loads(dumps(state))
    for k in "abc":
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        np.testing.assert_array_equal(back[k], state[k])
    assert back["d"] == b"" and back["a"].flags.writeable


def test_torch_checkpoints_load_weights_only(tmp_path):
    """A llama2c checkpoint (and the trained head's checkpoint) that would run code is refused in one line."""
    import torch

    from sentune.trainables._backbones import _llama2c_to_hf

    sentinel = tmp_path / "code-ran"
    path = tmp_path / "stories.pt"
    torch.save({"model_args": {"dim": 8}, "model": {}, "extra": _Plant(sentinel)}, path)
    with pytest.raises(SentuneError, match="stories.pt: not a llama2.c checkpoint that loads as plain weights"):
        _llama2c_to_hf(path)
    assert not sentinel.exists()
