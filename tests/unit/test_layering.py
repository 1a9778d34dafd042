"""Layers point one way: cri_server -> imageservice, cni, runtime, nri -> pycri_common
(and nri -> proto, for the generated NRI and ttrpc messages).

Every .py under the lower packages is parsed (not imported) and each import in
it is checked, wherever it sits: module level, inside a function, under
TYPE_CHECKING, or as importlib.import_module("literal").

- pycri_common imports only the standard library.
- runtime, cni and imageservice import themselves and pycri_common, never
  cri_server or proto (plus the one sideways edge listed in SIDEWAYS).
- nri (the ttrpc and multiplexer protocol layers) imports itself, pycri_common and proto,
  never cri_server or the runtime.
- The shim (runtime/shim/*) and the container init (runtime/container_init.py)
  run in small processes of their own: everything they import, followed through
  runtime.* and pycri_common.*, is the standard library.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"cri_server", "runtime", "imageservice", "cni", "pycri_common", "proto", "nri"}
LOWER = ("runtime", "cni", "imageservice", "pycri_common", "nri")
# What each lower package may import of the project (besides itself).
ALLOWED = {
    "pycri_common": set(),
    "runtime": {"pycri_common"},
    "cni": {"pycri_common"},
    "imageservice": {"pycri_common"},
    "nri": {"pycri_common", "proto"},
}
# Known sideways edges, by exact module: (importing package, imported module).
SIDEWAYS = {("imageservice", "runtime.dirfd")}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@dataclass(frozen=True)
class Import:
    where: str  # the importing file, relative to the tree's root
    line: int
    module: str  # absolute dotted name

    def __str__(self) -> str:
        return f"{self.where}:{self.line} imports {self.module}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(root: Path, path: Path, level: int, module: str | None) -> str:
    """The absolute name of `from <level dots><module> import ...` in path."""
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, module] if module else base)


def file_of(root: Path, module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth; `from a import b` yields a.b when that is a
    module of the project, else a."""
    where = str(path.relative_to(root))
    tree = ast.parse(path.read_text(), where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(where, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(root, path, node.level, node.module) if node.level \
                else (node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = base.split(".")[0] in PROJECT and file_of(root, sub) is not None
                yield Import(where, node.lineno, sub if is_module else base)
        elif isinstance(node, ast.Call) and _is_import_call(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield Import(where, node.lineno, arg.value)


def _is_import_call(node: ast.Call) -> bool:
    f = node.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or \
        (isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))
    return named and bool(node.args)


def files(root: Path, *tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (root / top).rglob("*.py"))


def _top(module: str) -> str:
    return module.split(".")[0]


def layering_violations(root: Path, path: Path) -> list[str]:
    own = path.relative_to(root).parts[0]
    out = []
    for imp in imports_of(root, path):
        top = _top(imp.module)
        if own == "pycri_common":
            if top not in STDLIB and top != own:
                out.append(f"{imp}: pycri_common imports only the standard library")
        elif top in PROJECT and top != own and top not in ALLOWED[own] \
                and (own, imp.module) not in SIDEWAYS:
            out.append(f"{imp}: {own} must not import {top} (a higher or sideways layer)")
    return out


def _packages_of(module: str) -> Iterator[str]:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def light_process_violations(root: Path, entry: Path) -> list[str]:
    """Imports outside the stdlib reached from entry through runtime.* and pycri_common.*."""
    out = []
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for imp in imports_of(root, path):
            top = _top(imp.module)
            if top in STDLIB:
                continue
            if top not in ("runtime", "pycri_common"):
                out.append(f"{imp} (reached from {entry.relative_to(root)}): the shim and the "
                           "container init import only the standard library, runtime.* and "
                           "pycri_common.*")
                continue
            for name in _packages_of(imp.module):
                target = file_of(root, name)
                if target is not None:
                    todo.append(target)
    return out


LIGHT = [*files(ROOT, "runtime/shim"), ROOT / "runtime" / "container_init.py"]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", files(ROOT, *LOWER), ids=_id)
def test_lower_packages_import_no_higher_layer(path: Path) -> None:
    assert layering_violations(ROOT, path) == []


@pytest.mark.parametrize("path", LIGHT, ids=_id)
def test_shim_and_init_import_only_the_stdlib_and_runtime(path: Path) -> None:
    assert light_process_violations(ROOT, path) == []


def test_sideways_edges_still_exist() -> None:
    """An edge in SIDEWAYS that is gone should leave the list (so it cannot grow back)."""
    found = {(p.relative_to(ROOT).parts[0], i.module)
             for p in files(ROOT, *LOWER) for i in imports_of(ROOT, p)}
    assert found >= SIDEWAYS


def _tree(tmp_path: Path, sources: dict[str, str]) -> Path:
    for rel, text in sources.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "cri_server/__init__.py": "", "cri_server/paths.py": "",
        "runtime/__init__.py": "",
        "runtime/probe.py":
            "from __future__ import annotations\n"
            "import cri_server.paths\n"                          # 2: module level
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from cri_server import paths\n"                 # 5: type-checking only
            "def f():\n"
            "    from cri_server.paths import Paths\n"           # 7: function-local
            "    import importlib\n"
            "    return importlib.import_module('proto.api_pb2')\n"  # 9: by name
            "def g():\n"
            "    from ..cri_server import x\n"                   # 11: relative
            "from runtime import probe\n"                        # fine: itself
            "from pycri_common.errors import NotFound\n",        # fine: the bottom
        "pycri_common/__init__.py": "",
        "pycri_common/bad.py": "import grpc\nfrom runtime import probe\nimport os\n",
    })
    found = layering_violations(root, root / "runtime/probe.py")
    assert sorted({v.split(":")[1].split()[0] for v in found}, key=int) == \
        ["2", "5", "7", "9", "11"]
    assert len(layering_violations(root, root / "pycri_common/bad.py")) == 2


def test_the_shim_check_follows_runtime_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "runtime/__init__.py": "", "runtime/shim/__init__.py": "",
        "runtime/helper.py": "import os\ndef f():\n    import httpx\n",
        "runtime/shim/ok.py": "import json\nfrom pycri_common.errors import NotFound\n",
        "runtime/shim/entry.py": "from runtime import helper\n",
    })
    found = light_process_violations(root, root / "runtime/shim/entry.py")
    assert len(found) == 1 and "runtime/helper.py:3 imports httpx" in found[0]
    assert light_process_violations(root, root / "runtime/shim/ok.py") == []
