"""The trainable contract and the epoch driver, without a deep-learning framework: the contract's modules
never import the driver (no import circle in ``sentune.trainables``), the resume state's shape, the hooks
base, and the driver's run loop (reports, best epoch, resume from every epoch and step, the PBT state in a
checkpoint) around a small numpy softmax regression that implements the contract."""

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

from sentune._safe_state import StateFormatError
from sentune.trainables import (
    CoreParams,
    FitResult,
    LoopContext,
    ModelTrainable,
    PreparedData,
    ResumeState,
    ResumeStore,
    SplitArrays,
    fit,
)
from sentune.trainables._hooks_base import SharedHooks
from sentune.trainables._resume import read_train_state

PACKAGE = Path(__file__).parents[1] / "sentune" / "trainables"
# what a resumed run must reproduce exactly (everything but clocks)
SAME = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "grad_norm", "grad_norm_max")


# --------------------------------------------------------------------------- the import graph


def _imports(path: Path, module: str) -> set[str]:
    """Every sentune module ``module`` imports, at the top or inside a function (lazy imports count)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("sentune.")}


def _graph() -> dict[str, set[str]]:
    modules = {
        ("sentune.trainables" if p.name == "__init__.py" else f"sentune.trainables.{p.stem}"): p
        for p in PACKAGE.glob("*.py")
    }
    return {m: _imports(p, m) & set(modules) for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_trainables_package_has_no_import_circle_and_the_contract_never_imports_the_driver():
    graph = _graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    driver = "sentune.trainables._driver"
    for contract in ("_contract", "_resume", "_params", "_hooks_base"):
        assert driver not in graph[f"sentune.trainables.{contract}"], contract
    assert "sentune.trainables._contract" in graph[driver]  # the driver depends on the contract


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# --------------------------------------------------------------------------- the resume state


def _state(**changes) -> ResumeState:
    base = dict(epoch=3, pos=16, step=11, partial={"sums": [1.0, 2.0, 3.0], "norms": [0.5], "seconds": 0.1},
                history=[{"epoch": 1}, {"epoch": 2}], best_value=0.75, best_epoch=2, best_state=np.arange(4.0),
                train={"w": np.ones((2, 2))})  # fmt: skip
    return ResumeState(**{**base, **changes})


def test_a_resume_state_is_written_as_the_mapping_of_its_fields_and_read_back(tmp_path):
    store = ResumeStore(str(tmp_path / "t1"))
    state = _state()
    store.save_state(state, rank=0, barrier=lambda: None)
    assert store.latest() == "state-000003-000000011"  # named by its epoch and step
    raw = store.load(0)
    assert list(raw) == ["epoch", "pos", "step", "partial", "history", "best_value", "best_epoch", "best_state",
                         "train"]  # fmt: skip
    back = store.load_state(0)
    assert back is not None and (back.epoch, back.pos, back.step, back.best_epoch) == (3, 16, 11, 2)
    assert back.partial == state.partial and back.history == state.history
    assert np.array_equal(back.best_state, state.best_state) and np.array_equal(back.train["w"], state.train["w"])
    assert store.history() == state.history
    cleared = back.without_best()
    assert (cleared.best_value, cleared.best_epoch, cleared.best_state) == (None, 0, None) and cleared.step == 11


@pytest.mark.parametrize(
    "raw, says",
    [
        ([1, 2], "is a mapping"),
        ({"epoch": 1}, "needs 'pos'"),
        ({**_state().to_dict(), "epoch": "3"}, "are counts"),
        ({**_state().to_dict(), "step": -1}, "are counts"),
        ({**_state().to_dict(), "best_epoch": True}, "are counts"),
        ({**_state().to_dict(), "history": {}}, "history is a list"),
        ({**_state().to_dict(), "partial": [1]}, "history is a list, its partial a mapping"),
    ],
)
def test_a_resume_state_that_sentune_did_not_write_is_one_line_naming_its_file(raw, says):
    with pytest.raises(StateFormatError, match=says) as err:
        ResumeState.from_dict(raw, "/runs/r/resume/t1/state-000001-000000004/rank-0.state")
    assert str(err.value).startswith("/runs/r/resume/t1/") and "\n" not in str(err.value)


def test_a_store_travels_to_a_worker_without_its_filesystem(tmp_path):
    store = ResumeStore(str(tmp_path), every_epochs=2, every_steps=5)
    store.latest()  # opens its filesystem
    back = pickle.loads(pickle.dumps(store))
    assert (back.root, back.every_epochs, back.every_steps) == (store.root, 2, 5) and back.latest() is None


# --------------------------------------------------------------------------- a numpy trainable


def _data(seed: int = 0, rows: int = 60, classes: int = 3) -> PreparedData:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(classes, 4))

    def split(n):
        y = rng.integers(0, classes, size=n)
        return SplitArrays((centres[y] + rng.normal(0, 1.5, size=(n, 4))).astype(np.float32), y.astype(np.int64))

    return PreparedData(label_names=[f"c{i}" for i in range(classes)], splits={"train": split(rows), "dev": split(30)})


class _SoftmaxHooks(SharedHooks):
    """Softmax regression with noisy gradients (an RNG whose state a resume must carry)."""

    def __init__(self, params, data, ctx):
        super().__init__(params, data, ctx, framework_sum=None)
        self.data, self.lr = data, 0.0
        self.rng = np.random.default_rng(params.seed + ctx.rank)
        self.w = self.rng.normal(0, 0.1, size=(data.splits["train"].x.shape[1], data.num_classes))
        self.model = self

    def set_lr(self, lr):
        self.lr = lr

    def _probs(self, x):
        z = x @ self.w
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def step(self, idx):
        split = self.data.splits["train"]
        x, y = split.x[idx].astype(np.float64), split.y[idx]
        p = self._probs(x)
        loss = -np.log(p[np.arange(len(y)), y])
        grad = x.T @ (p - np.eye(self.data.num_classes)[y]) / len(y) + self.rng.normal(0, 0.01, size=self.w.shape)
        self.w = self.w - self.lr * grad
        return float(loss.sum()), float((p.argmax(1) == y).sum()), float(np.linalg.norm(grad))

    def evaluate(self, split):
        rows = self.data.splits[split]
        p = self._probs(rows.x.astype(np.float64))
        return float(-np.log(p[np.arange(len(rows.y)), rows.y]).mean()), p.argmax(1)

    def snapshot(self):
        return self.w.copy()

    def restore(self, state):
        self.w = np.array(state)

    def train_state(self):
        return {"w": self.w.copy(), "rng": self.rng.bit_generator.state}

    def load_train_state(self, state):
        self.w = np.array(state["w"])
        self.rng.bit_generator.state = state["rng"]

    def write_checkpoint(self, folder, state):
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "w.npy", state)


class _Softmax(ModelTrainable):
    name = "softmax"
    params_model = CoreParams

    def prepare(self, params, splits, *, device="cpu", log=None):
        return splits

    def hooks(self, params, data, ctx):
        return _SoftmaxHooks(params, data, ctx)

    def load_checkpoint(self, folder, data):
        return CoreParams(), np.load(Path(folder) / "w.npy")

    def predict(self, model, data, split, *, device="cpu"):
        raise NotImplementedError

    def write_model(self, checkpoint, train_texts, folder):
        raise NotImplementedError  # this test model labels no texts

    def load_model(self, folder, *, device="cpu"):
        raise NotImplementedError

    def ray_trainer(self):
        raise NotImplementedError

    def worker_context(self, *, world_size, rank, cpus, use_gpu, report):
        return LoopContext(world_size=world_size, rank=rank, cpus=cpus, report=report)

    def use_cpus(self, cpus):
        return "cpu"


SOFTMAX = _Softmax()
PARAMS = CoreParams(lr=0.3, epochs=4, batch_size=8, seed=3, warmup_epochs=1, monitor="val_loss")


class _Die(Exception):
    pass


def test_fit_reports_every_epoch_and_ends_with_the_best_epochs_weights(tmp_path):
    data, reports = _data(), []

    def report(metrics, save):
        folder = tmp_path / f"epoch-{metrics['epoch']}"
        if save is not None:
            save(folder)
        reports.append((metrics, folder if save is not None else None))

    result = fit(SOFTMAX, PARAMS, data, LoopContext(report=report))
    assert isinstance(result, FitResult) and [m["epoch"] for m, _ in reports] == [1, 2, 3, 4]
    assert result.history == [m for m, _ in reports] and {m["resumed_at_epoch"] for m, _ in reports} == {0}
    losses = [m["val_loss"] for m in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses)) and result.best_metric == min(losses)
    # a checkpoint comes with the first epoch and every one that improved, holding that epoch's weights
    improved = [e for e, v in enumerate(losses, 1) if e == 1 or v < min(losses[: e - 1])]
    assert [m["epoch"] for m, folder in reports if folder is not None] == improved
    assert np.array_equal(result.model.w, np.load(tmp_path / f"epoch-{result.best_epoch}" / "w.npy"))
    # one epoch's warm-up ends at the peak lr, then the cosine decays it
    assert result.history[0]["lr"] == PARAMS.lr and result.history[-1]["lr"] < result.history[-2]["lr"] < PARAMS.lr
    assert fit(SOFTMAX, PARAMS, data).history[-1]["val_loss"] == losses[-1]  # the same seed, the same run


@pytest.mark.parametrize("every_steps", [None, 3])
@pytest.mark.parametrize("die_at", [1, 2, 4])
def test_a_fit_interrupted_after_any_report_goes_on_with_the_same_results(tmp_path, every_steps, die_at):
    data = _data()
    straight = fit(SOFTMAX, PARAMS, data)
    store = ResumeStore(str(tmp_path / "t"), every_steps=every_steps)
    count = [0]

    def dying(metrics, save):
        count[0] += 1
        if count[0] == die_at:
            raise _Die

    with pytest.raises(_Die):
        fit(SOFTMAX, PARAMS, data, LoopContext(report=dying, resume=store))
    seen = []
    resumed = fit(SOFTMAX, PARAMS, data, LoopContext(report=lambda m, s: seen.append(m), resume=store))
    # the dying report's epoch never wrote its state: it is trained again (from its last step's state)
    assert [m["epoch"] for m in seen] == list(range(die_at, 5))
    went_on_at = die_at if die_at > 1 or every_steps else 0  # dying in epoch 1 without step states: afresh
    assert [m["resumed_at_epoch"] for m in resumed.history] == [0] * (die_at - 1) + [went_on_at] * (5 - die_at)
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert {k: a[k] for k in SAME} == {k: b[k] for k in SAME}, a["epoch"]
    assert (resumed.best_epoch, resumed.best_metric) == (straight.best_epoch, straight.best_metric)
    assert np.array_equal(resumed.model.w, straight.model.w)
    assert store.latest() == "state-000005-000000032"  # 4 epochs x 8 steps: only the last state is kept
    assert fit(SOFTMAX, PARAMS, data, LoopContext(resume=store)).history == resumed.history  # nothing left to train


def test_a_pbt_report_carries_the_state_another_trial_goes_on_from(tmp_path):
    data, folders = _data(), []

    def report(metrics, save):
        assert save is not None  # every epoch carries a checkpoint
        save(tmp_path / f"epoch-{metrics['epoch']}")
        folders.append(tmp_path / f"epoch-{metrics['epoch']}")

    straight = fit(SOFTMAX, PARAMS, data, LoopContext(report=report, state_in_checkpoint=True))
    state = read_train_state(folders[1])
    assert state is not None and (state.epoch, state.pos, state.partial) == (3, 0, None)
    assert state.step == 16 and [m["epoch"] for m in state.history] == [1, 2]
    # another trial takes it as its resume state (with no best of its own yet) and trains epochs 3 and 4
    store = ResumeStore(str(tmp_path / "other"))
    store.save_state(state.without_best(), rank=0, barrier=lambda: None)
    went_on = fit(SOFTMAX, PARAMS, data, LoopContext(resume=store))
    assert [m["epoch"] for m in went_on.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history[2:], went_on.history[2:], strict=True):
        assert {k: a[k] for k in SAME} == {k: b[k] for k in SAME}
    assert went_on.best_epoch in (3, 4)  # its own best: from the epochs it trained


# --------------------------------------------------------------------------- the hooks base


def test_the_hooks_base_holds_the_lr_scale_the_share_of_rows_the_focal_alpha_and_the_sum():
    data = _data(rows=61)
    params = CoreParams(lr_scaling="sqrt", loss="focal", focal_alpha="auto")
    hooks = _SoftmaxHooks(params, data, LoopContext(world_size=4, rank=1))
    counts = np.bincount(data.splits["train"].y, minlength=3)
    assert hooks.lr_scale == 2.0 and hooks.per_rank == 15
    assert hooks.focal_alpha == pytest.approx(list(counts.sum() / (3 * counts)))
    assert _SoftmaxHooks(CoreParams(), data, LoopContext()).focal_alpha is None  # cross-entropy: no alpha
    values = np.array([1.0, 2.0])
    assert hooks.all_reduce_sum(values) is values  # no sum given: one worker's values as they are

    class Framework(_SoftmaxHooks):
        def __init__(self, params, data, ctx):
            SharedHooks.__init__(self, params, data, ctx, framework_sum=lambda v: v * 4)

    assert Framework(params, data, LoopContext(world_size=4)).all_reduce_sum(values).tolist() == [4.0, 8.0]
    # the context's own sum (a test, or a runner with its collectives) takes the framework's place
    ctx = LoopContext(world_size=4, all_reduce_sum=lambda v: v * 10)
    assert Framework(params, data, ctx).all_reduce_sum(values).tolist() == [10.0, 20.0]


# --------------------------------------------------------------------------- the trial's plan


def test_a_trial_hands_its_workers_a_frozen_plan_that_pickles(tmp_path):
    import dataclasses

    from sentune.trainables import get_trainable
    from sentune.tuning._trial import WorkerPlan, resume_store

    plan = WorkerPlan(entry=get_trainable("lstm_tf"), params={"epochs": 2}, data_ref=["ref"], cpus_per_worker=2,
                      use_gpu=False, local=True, resume=resume_store(str(tmp_path), "t1"))  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.local = False
    back = pickle.loads(pickle.dumps(plan))
    assert back.entry == plan.entry and back.params == {"epochs": 2} and back.resume.root == f"{tmp_path}/t1"
    assert (back.pbt, back.tags) == (False, {})
