"""Ray's private names appear in one module only, sentune/tuning/_ray_compat.py, which checks at start-up
that the installed Ray still has them (so a Ray upgrade fails there, in seconds, and not deep in a sweep).

The check reads sentune's source (ast), nothing is run. A private Ray name is any of:
- an import of a private Ray module or name (``ray._private...``, ``ray.air._internal...``, ``from ray.x
  import _y``);
- in a module that imports Ray: an underscore attribute (``x._y``, or ``getattr(x, "_y")``) that sentune
  does not define itself, or one that a Ray class a sentune class derives from uses (``self._metric`` in a
  scheduler subclass is Ray's, even if sentune assigned it);
- a method or attribute defined in a class deriving from a Ray class under a private name that Ray's class
  uses (overriding ``_on_insufficient_samples``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPAT = "sentune/tuning/_ray_compat.py"

# Files allowed to use Ray's private names outside _ray_compat: none.
NOT_YET_MOVED: set[str] = set()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_ray(dotted: str) -> bool:
    return dotted == "ray" or dotted.startswith("ray.")


def _module_of(rel: str) -> str:
    return rel[: -len(".py")].replace("/", ".").removesuffix(".__init__")


def _import_map(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted path it was imported as (top-level and lazy imports alike)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _imports_ray(tree: ast.Module) -> bool:
    return any(_is_ray(path) for path in _import_map(tree).values())


class _Classes:
    """Every class sentune defines, with the Ray classes it derives from (resolved through the imports of
    sentune's own modules, without importing them) and the private names those Ray classes use."""

    def __init__(self, trees: Mapping[str, ast.Module]):
        self.bases: dict[str, list[str]] = {}  # "module.Class" -> its bases' dotted paths
        self.imports = {_module_of(rel): _import_map(tree) for rel, tree in trees.items()}
        for rel, tree in trees.items():
            module = _module_of(rel)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.bases[f"{module}.{node.name}"] = [self._dotted(module, base) for base in node.bases]
        self._ray_names: dict[str, frozenset[str]] = {}

    def _dotted(self, module: str, base: ast.expr) -> str:
        base = base.value if isinstance(base, ast.Subscript) else base
        head, _, rest = ast.unparse(base).partition(".")
        path = self.imports[module].get(head, f"{module}.{head}")
        return f"{path}.{rest}" if rest else path

    def _follow(self, dotted: str) -> str:
        """A name re-exported by a sentune package (``from sentune.x import Y`` where x/__init__ imports Y)."""
        for _ in range(5):
            module, _, name = dotted.rpartition(".")
            if dotted in self.bases or module not in self.imports or name not in self.imports[module]:
                return dotted
            dotted = self.imports[module][name]
        return dotted

    def ray_ancestors(self, key: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found: set[str] = set()
        for base in self.bases.get(key, []):
            base = self._follow(base)
            if _is_ray(base):
                found.add(base)
            elif base in self.bases and base not in seen:
                found |= self.ray_ancestors(base, seen | {key})
        return found

    def ray_private_names(self, key: str) -> frozenset[str]:
        """The private identifiers in the source of every Ray class in ``key``'s ancestry."""
        if key not in self._ray_names:
            names: set[str] = set()
            for dotted in self.ray_ancestors(key):
                for cls in _ray_object(dotted).__mro__:
                    if _is_ray(cls.__module__):
                        names |= {n for n in re.findall(r"\b_\w+", inspect.getsource(cls)) if _private(n)}
            self._ray_names[key] = frozenset(names)
        return self._ray_names[key]


def _ray_object(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def _own_private_names(trees: Mapping[str, ast.Module]) -> set[str]:
    """Private names sentune defines: its functions, classes, module and class variables, and attributes
    it assigns on ``self`` / ``cls``."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    names.add(node.attr)
    return {n for n in names if _private(n)}


def _private_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            paths = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            paths = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, path) for path in paths if _is_ray(path) and any(map(_private, path.split(".")))]
    return found


def _attribute_uses(tree: ast.Module):
    """(line, object expression, private name, enclosing class or None, is it a definition in a class body)."""
    out = []

    def visit(node: ast.AST, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                for item in child.body:
                    for name in _defined_names(item):
                        if _private(name):
                            out.append((item.lineno, None, name, child.name, True))
                visit(child, child.name)
                continue
            if isinstance(child, ast.Attribute) and _private(child.attr):
                out.append((child.lineno, ast.unparse(child.value), child.attr, cls, False))
            if _is_attr_call(child):
                name = child.args[1].value  # type: ignore[attr-defined]
                if _private(name):
                    out.append((child.lineno, ast.unparse(child.args[0]), name, cls, False))  # type: ignore[attr-defined]
            visit(child, cls)

    visit(tree, None)
    return out


def _defined_names(item: ast.stmt) -> list[str]:
    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [item.name]
    targets = item.targets if isinstance(item, ast.Assign) else [item.target] if isinstance(item, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _is_attr_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


def private_ray_uses(sources: Mapping[str, str], *, allowed: str = COMPAT) -> dict[str, list[str]]:
    """File -> its uses of Ray's private names ("line: what"), for every file but ``allowed``."""
    trees = {rel: ast.parse(text, rel) for rel, text in sources.items()}
    classes = _Classes(trees)
    own = _own_private_names({rel: t for rel, t in trees.items() if rel != allowed})
    found: dict[str, list[str]] = {}
    for rel, tree in trees.items():
        if rel == allowed:
            continue
        uses = [f"{line}: import {path}" for line, path in _private_imports(tree)]
        if _imports_ray(tree):
            module = _module_of(rel)
            for line, obj, name, cls, definition in _attribute_uses(tree):
                ray_names = classes.ray_private_names(f"{module}.{cls}") if cls else frozenset()
                on_self = obj in ("self", "cls")
                if definition and name in ray_names:
                    uses.append(f"{line}: defines Ray's {name} in {cls}")
                elif not definition and (name not in own or (on_self and name in ray_names)):
                    uses.append(f"{line}: {obj}.{name}")
        if uses:
            found[rel] = uses
    return found


def _sentune_sources() -> dict[str, str]:
    return {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in sorted((ROOT / "sentune").rglob("*.py"))
    }


def test_rays_private_names_are_used_in_ray_compat_only():
    found = private_ray_uses(_sentune_sources())
    shown = "; ".join(f"{rel}: {', '.join(uses)}" for rel, uses in sorted(found.items()))
    assert set(found) <= NOT_YET_MOVED, f"Ray's private names outside {COMPAT}: {shown}"
    assert set(found) == NOT_YET_MOVED, f"moved into {COMPAT}: drop {NOT_YET_MOVED - set(found)} from NOT_YET_MOVED"


def test_ray_compat_imports_no_ray_as_it_is_imported():
    """The CLI can check the Ray version at start-up without paying for Ray's import."""
    tree = ast.parse((ROOT / COMPAT).read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not [ast.unparse(n) for n in top if _imports_ray(ast.Module([n], []))]


SCHEDULER = """
from ray.tune.schedulers import ASHAScheduler

class Mine(ASHAScheduler):
    def __init__(self):
        super().__init__()
        self._mine = 1
        self._metric = "x"

    def _on_result(self):
        return self._mine, self._brackets, self._metric

    def _num_stopped(self):  # a name ASHA uses
        pass
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (SCHEDULER,
         ["8: self._metric", "11: self._brackets", "11: self._metric", "13: defines Ray's _num_stopped in Mine"]),
        ("import ray\n\ndef f(tuner):\n    return tuner._local_tuner._tune_config\n",
         ["4: tuner._local_tuner._tune_config", "4: tuner._local_tuner"]),
        ("def f():\n    from ray.air._internal.usage import _count_callbacks\n",
         ["2: import ray.air._internal.usage._count_callbacks"]),
        ("import ray._private.thirdparty.pathspec\n", ["1: import ray._private.thirdparty.pathspec"]),
        ("import ray\n\ndef f(s):\n    return getattr(s, '_results', None)\n", ["4: s._results"]),
        ("def f(s):\n    return s._results\n", []),  # no Ray in the module: not a Ray object
        ("import ray\n\ndef _mine():\n    pass\n\nclass A:\n    def f(self, other):\n        return other._mine\n", []),
    ],
)  # fmt: skip
def test_the_check_finds_rays_private_names(source, expected):
    found = private_ray_uses({"sentune/x.py": source, COMPAT: "import ray\nray._private\n"})
    assert sorted(found.get("sentune/x.py", [])) == sorted(expected)


def test_the_installed_ray_is_supported_and_has_every_private_name_sentune_uses():
    from sentune.tuning._ray_compat import check_ray, missing_private_names

    assert missing_private_names() == []
    check_ray()


def test_an_unsupported_ray_is_one_line_naming_it_and_the_supported_ones(monkeypatch):
    from sentune.tuning._ray_compat import ANY_RAY_ENV, UnsupportedRayError, check_ray_version

    monkeypatch.delenv(ANY_RAY_ENV, raising=False)
    with pytest.raises(UnsupportedRayError) as caught:
        check_ray_version("2.61.0")
    message = str(caught.value)
    assert "Ray 2.61.0 is installed" in message and "supports Ray 2.60.x" in message and ANY_RAY_ENV in message
    assert "\n" not in message
    check_ray_version("2.60.3")
    monkeypatch.setenv(ANY_RAY_ENV, "1")
    check_ray_version("2.61.0")  # the user's choice; the private names are still checked by check_ray


def test_a_restored_tuner_takes_this_processs_callbacks_stopper_and_scheduler(tmp_path):
    from ray import tune

    from sentune.tuning._ray_compat import set_restored_configs
    from sentune.tuning._schedulers import ResumableFIFO

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path), name="tune"))
    scheduler, callbacks, stop = ResumableFIFO(), [tune.Callback()], {"epoch": 3}
    set_restored_configs(tuner, callbacks=callbacks, stop=stop, scheduler=scheduler)
    internal = tuner._local_tuner
    assert internal._tune_config.scheduler is scheduler
    assert internal.get_run_config().callbacks is callbacks and internal.get_run_config().stop is stop
