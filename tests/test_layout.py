"""The shape of the package: layers import downwards only, no import loops, modules stay readable,
a head loads light.

The layer table lives in docs/store.md ("Data flow and import layers") and nowhere else: this test
reads it from there, so the page and the check cannot disagree.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "featx"
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 6


def read_layers(doc: Path = ROOT / "docs" / "store.md") -> dict[str, int]:
    """{package or top-level module: layer} from the table between the `layers` markers."""
    text = doc.read_text(encoding="utf-8")
    table = text.split("<!-- layers:", 1)[1].split("<!-- /layers -->", 1)[0]
    layers = {}
    for row in re.finditer(r"^\| (\d+) \| ([^|]+) \|", table, re.M):
        for name in re.findall(r"`([\w]+)`", row.group(2)):
            layers[name] = int(row.group(1))
    return layers


LAYERS = read_layers()


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    """The layer-table entry a module belongs to: `featx.probes.cv` -> `probes`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str, known: set[str]) -> str | None:
    """The featx module an import names (a submodule if one exists, else its package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> featx modules it imports, lazy and TYPE_CHECKING imports included."""
    paths = {module_name(p): p for p in modules()}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for me, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("featx"):
                base = node.module
                for alias in node.names:  # `from featx.x import y`: y may be a submodule
                    targets.add(resolve(f"{base}.{alias.name}", known))
            elif isinstance(node, ast.Import):
                targets.update(resolve(a.name, known) for a in node.names if a.name.startswith("featx"))
        graph[me] = {t for t in targets if t and t != me}
    return graph


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports that break the layer order: into a higher layer, or into another package of the
    same layer. The package root `featx` (its lazy public names) is only for users."""
    wrong = []
    for me, targets in graph.items():
        mine = component(me)
        for target in sorted(targets):
            theirs = component(target)
            if theirs == mine:
                continue
            if target == "featx" or layers[theirs] >= layers[mine]:
                wrong.append(f"{me} imports {target}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_and_module_has_a_layer():
    unknown = sorted({component(module_name(p)) for p in modules()} - set(LAYERS))
    assert not unknown, f"add these to the layer table in docs/store.md: {unknown}"
    stale = sorted(set(LAYERS) - {component(module_name(p)) for p in modules()})
    assert not stale, f"docs/store.md names layers for what no longer exists: {stale}"


def test_layers_import_downwards_only():
    wrong = upward_imports(import_graph(), LAYERS)
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_a_bad_graph():
    """The two checks above fail on the faults they exist for (a test that cannot fail is none)."""
    layers = {"errors": 0, "data": 1, "store": 2, "extraction": 2, "__init__": 3}
    bad = {
        "featx.data.dataset": {"featx.store.reader"},  # upward
        "featx.store.reader": {"featx.extraction.run"},  # same layer, other package
        "featx.extraction.run": {"featx.data.dataset"},
        "featx.store.schema": {"featx"},  # the public face, from inside
        "featx.data.a": {"featx.data.b"}, "featx.data.b": {"featx.data.c"},
        "featx.data.c": {"featx.data.a"},  # a loop inside one package
    }
    assert upward_imports(bad, layers) == ["featx.data.dataset imports featx.store.reader",
                                           "featx.store.reader imports featx.extraction.run",
                                           "featx.store.schema imports featx"]
    assert ["featx.data.a", "featx.data.b", "featx.data.c"] in cycles(bad)
    assert ["featx.data.dataset", "featx.extraction.run", "featx.store.reader"] in cycles(bad)
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layer_table_reads_from_the_docs(tmp_path):
    doc = tmp_path / "store.md"
    doc.write_text("x\n<!-- layers: -->\n| layer | m | r |\n|---|---|---|\n| 0 | `a`, `b` | r |\n"
                   "| 3 | `c` | r |\n<!-- /layers -->\n| 9 | `d` | not read |\n")
    assert read_layers(doc) == {"a": 0, "b": 0, "c": 3}


def test_no_private_names_cross_modules():
    wrong = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featx"):
                wrong += [f"{module_name(path)}: {node.module} {a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    assert not wrong, "private names imported across modules:\n" + "\n".join(wrong)


def test_modules_stay_readable():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_top_level_holds_few_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"featx/ holds {len(top)} modules: {top}"


def imports_h5py(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "h5py" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "h5py":
            return True
    return False


def test_only_the_store_opens_hdf5():
    wrong = [str(p.relative_to(ROOT)) for p in modules()
             if component(module_name(p)) != "store" and imports_h5py(p)]
    assert not wrong, f"h5py used outside featx/store/: {wrong}"


def test_loading_a_head_and_scoring_features_stays_light(tmp_path):
    """A saved head scores features without pulling in the image, HDF5 or training stack."""
    probe = f"""
import sys, numpy as np
import featx
from featx.heads.io import save_head
meta = {{"kind": "linear", "classes": ["a", "b"], "feature_dim": 3, "backbone": "x",
         "normalize": "none"}}
save_head({str(tmp_path / "h")!r}, {{"layers.0.weight": np.eye(3, 2, dtype=np.float32),
                                     "layers.0.bias": np.zeros(2, np.float32)}}, meta)
head = featx.load_head({str(tmp_path / "h")!r})
assert head.predict(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == ["a", "b"]
print(",".join(m for m in ("h5py", "PIL", "sklearn", "torch") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
