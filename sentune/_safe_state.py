"""Train states in a format that does not execute code when read: the resume checkpoints and the PBT train
state carried by a Tune checkpoint.

A state is a tree of dicts, lists, tuples, str, int, float, bool, None, bytes, numpy arrays and torch
tensors. It is written as one file: a JSON header (the tree, each array replaced by its index, and a table of
the arrays' dtypes, shapes and places) followed by the arrays' raw bytes. Reading parses the header with
``json.loads`` and takes each array with ``np.frombuffer`` after checking its dtype is a plain number (never
an object) and its bytes lie inside the file; files of the first format (a numpy ``.npz`` with the tree in
its entry ``__tree__``) are read with ``np.load(allow_pickle=False)``. No pickle anywhere, so a crafted file
can only fail to load (a :class:`~sentune.errors.SentuneError` naming it), never run code. Object arrays are
refused on both sides.

torch is imported only to rebuild a tensor that a state holds (the torch trainable's states): this module
imports neither torch, TensorFlow nor Ray itself.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import numpy as np

from sentune.errors import SentuneError

__all__ = ["StateFormatError", "dumps", "loads", "MAGIC"]

MAGIC = "sentune-state-1"
_TREE = "__tree__"
_MAX_DEPTH = 64


class StateFormatError(SentuneError):
    """A state file that is not one sentune wrote (damaged, truncated, or crafted)."""


def _torch_to_numpy(t: Any) -> tuple[np.ndarray, str]:
    t = t.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype == "bfloat16":  # numpy has no bfloat16: keep its bits
        import torch

        return t.contiguous().view(torch.int16).numpy(), dtype
    return t.contiguous().numpy(), dtype


def _encode(obj: Any, arrays: list[np.ndarray], depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("state nested too deeply")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, np.generic):
        return _encode(obj.item(), arrays, depth)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise ValueError("object arrays cannot be stored")
        arrays.append(obj)
        return {"__array__": len(arrays) - 1}
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        arr, dtype = _torch_to_numpy(obj)
        arrays.append(arr)
        return {"__tensor__": len(arrays) - 1, "dtype": dtype}
    if isinstance(obj, bytes):
        arrays.append(np.frombuffer(obj, dtype=np.uint8))
        return {"__bytes__": len(arrays) - 1}
    return _encode_container(obj, arrays, depth)


def _encode_container(obj: Any, arrays: list[np.ndarray], depth: int) -> Any:
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays, depth + 1) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, arrays, depth + 1) for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays, depth + 1), _encode(v, arrays, depth + 1)] for k, v in obj.items()]}
    raise ValueError(f"a train state cannot hold a {type(obj).__name__}")


# The file: _HEAD, the JSON header's length (8 bytes, little-endian), the header (the tree and a table of the
# arrays: dtype, shape, offset, length), then every array's raw bytes at its offset (64-byte aligned). One copy
# of the arrays to write, none of them compressed or checksummed: a resume state is written every epoch.
# Files of the first format (a numpy .npz) are still read.
_HEAD = b"SNTST\x002\n"
_ALIGN = 64
_KINDS = "biufc"  # booleans, integers, floats, complex: no objects, no structured records


def frames(state: Any) -> list[Any]:
    """The pieces of one state file, in order, as buffers (the arrays' own memory, not copies): written one after
    another they make the file (:func:`dumps` joins them)."""
    arrays: list[np.ndarray] = []
    tree = _encode(state, arrays)
    table: list[list] = []
    body: list[Any] = []
    offset = 0
    for a in arrays:
        raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        table.append([a.dtype.str, list(a.shape), offset, int(raw.nbytes)])
        pad = -raw.nbytes % _ALIGN
        body += [raw.data, b"\x00" * pad] if pad else [raw.data]
        offset += raw.nbytes + pad
    text = json.dumps({"format": MAGIC, "state": tree, "arrays": table}, allow_nan=True, separators=(",", ":"))
    header = text.encode("utf-8")
    head = _HEAD + len(header).to_bytes(8, "little") + header
    return [head + b"\x00" * (-len(head) % _ALIGN), *body]


def dumps(state: Any) -> bytes:
    """The bytes of one state file."""
    return b"".join(frames(state))


class _Arrays:
    """The arrays of a file of the current format, looked up as ``a<i>`` (as in the .npz of the first)."""

    def __init__(self, data: bytes, table: Any, start: int):
        if not isinstance(table, list):
            raise ValueError("no array table")
        self.data, self.table, self.start = data, table, start
        self.names = {f"a{i}" for i in range(len(table))}

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self.table[int(name[1:])]
        if not isinstance(entry, list) or len(entry) != 4 or not isinstance(entry[0], str):
            raise ValueError("bad array entry")
        dtype = np.dtype(entry[0])
        shape, at, size = entry[1], entry[2], entry[3]
        counts = [at, size, *shape] if isinstance(shape, list) else None
        if dtype.kind not in _KINDS or dtype.hasobject or counts is None:
            raise ValueError(f"array {name}: not a plain numeric array")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise ValueError(f"array {name}: bad shape or place")
        if math.prod(shape) * dtype.itemsize != size or self.start + at + size > len(self.data):
            raise ValueError(f"array {name}: its data is not in the file")
        flat = np.frombuffer(self.data, dtype=dtype, count=math.prod(shape), offset=self.start + at)
        return flat.reshape(shape).copy()


def _read_tree(data: bytes) -> tuple[Any, Any, set[str]]:
    """(the tree, its arrays, their names) of a file of the current format."""
    size = int.from_bytes(data[len(_HEAD) : len(_HEAD) + 8], "little")
    if len(data) < len(_HEAD) + 8 + size:
        raise ValueError("truncated header")
    tree = json.loads(data[len(_HEAD) + 8 : len(_HEAD) + 8 + size].decode("utf-8"))
    if not isinstance(tree, dict) or tree.get("format") != MAGIC:
        raise ValueError("not a sentune state")
    arrays = _Arrays(data, tree.get("arrays"), -(-(len(_HEAD) + 8 + size) // _ALIGN) * _ALIGN)
    return tree, arrays, arrays.names


class _Decoder:
    def __init__(self, files: Any, names: set[str]):
        self.files, self.names = files, names

    def array(self, index: Any) -> np.ndarray:
        if not isinstance(index, int) or isinstance(index, bool) or f"a{index}" not in self.names:
            raise ValueError(f"no array {index!r}")
        return self.files[f"a{index}"]

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("state nested too deeply")
        if isinstance(obj, list):
            return [self(v, depth + 1) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if len(obj) == 1 and "__array__" in obj:
            return self.array(obj["__array__"])
        if set(obj) == {"__tensor__", "dtype"}:
            return self.tensor(self.array(obj["__tensor__"]), obj["dtype"])
        if len(obj) == 1 and "__bytes__" in obj:
            return self.array(obj["__bytes__"]).tobytes()
        if len(obj) == 1 and "__tuple__" in obj:
            return tuple(self(v, depth + 1) for v in _list(obj["__tuple__"]))
        if len(obj) == 1 and "__items__" in obj:
            out = {}
            for pair in _list(obj["__items__"]):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("bad item")
                out[self(pair[0], depth + 1)] = self(pair[1], depth + 1)
            return out
        if any(k.startswith("__") for k in obj):
            raise ValueError(f"unknown entry {sorted(obj)[0][:40]!r}")
        return {k: self(v, depth + 1) for k, v in obj.items()}

    @staticmethod
    def tensor(arr: np.ndarray, dtype: Any) -> Any:
        import torch

        if dtype == "bfloat16":
            return torch.from_numpy(arr.copy()).view(torch.bfloat16)
        out = torch.from_numpy(arr.copy())
        if not isinstance(dtype, str) or str(out.dtype).removeprefix("torch.") != dtype:
            raise ValueError(f"tensor dtype {str(dtype)[:20]!r} does not match its data")
        return out


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


def loads(data: bytes, source: str = "state") -> Any:
    """The state in ``data``; anything else (a pickle, a truncated or crafted file) is a StateFormatError."""
    try:
        if data[: len(_HEAD)] == _HEAD:
            tree, arrays, names = _read_tree(data)
            return _Decoder(arrays, names)(tree.get("state"))
        with np.load(io.BytesIO(data), allow_pickle=False) as files:  # the first format
            names = set(files.files)
            if _TREE not in names:
                raise ValueError("no tree entry")
            tree = json.loads(files[_TREE].tobytes().decode("utf-8"))
            if not isinstance(tree, dict) or tree.get("format") != MAGIC:
                raise ValueError("not a sentune state")
            return _Decoder(files, names)(tree.get("state"))
    except (ValueError, OSError, EOFError, KeyError, TypeError, IndexError, RecursionError,
            zipfile.BadZipFile) as exc:  # fmt: skip
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise StateFormatError(f"{source}: not a readable sentune train state ({reason})") from None
