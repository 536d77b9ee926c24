"""Doors that open one way: which part of the project may import which, read from the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The folder each installed package lives in, and the parts of the project by package prefix.
FOLDERS = {
    "streamrnn": ROOT / "streamrnn",
    "streamrnn.training": ROOT / "training",
    "streamrnn.deploy": ROOT / "deploy",
}
PARTS = ("service", "recipe", "evaluation", "dev", "training", "deploy")
# What each part may import besides itself. The command line (cli.py) dispatches to all of them.
ALLOWED = {
    "core": set(),
    "service": {"core"},
    "recipe": {"core"},
    "evaluation": {"core", "recipe"},
    "training": {"core", "recipe"},
    "deploy": {"core", "recipe", "evaluation", "training"},
    "dev": {"core", "recipe", "evaluation", "training"},
}


def part_of(module: str) -> str:
    if module in ("streamrnn.cli", "streamrnn.__main__"):  # the command: it may call on every part
        return "cli"
    for part in PARTS:
        if module == f"streamrnn.{part}" or module.startswith(f"streamrnn.{part}."):
            return part
    return "core"


def modules() -> dict[str, Path]:
    """Every module of the installed package by its dotted name."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *rel)).removesuffix(".__init__")
            if package == "streamrnn" and rel[0] in ("training", "deploy"):
                continue
            found.setdefault(name, path)
    return found


def imports(module: str, path: Path) -> set[str]:
    """The streamrnn modules a file imports, at its top or inside a function, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.add(".".join(p for p in (base, node.module or "") if p))
    return {n for n in names if n == "streamrnn" or n.startswith("streamrnn.")}


def test_the_parts_import_each_other_one_way():
    """The core (runtime, contract, wire, client...) imports no part; the service only the core;
    training and evaluation stand on the recipe package and never on each other; deploy and dev
    stand on those. A door opened the other way fails here, naming the file."""
    found = modules()
    assert {part_of(m) for m in found} == {"cli", "core", *PARTS}, "a part has no modules: the map is stale"
    wrong = []
    for module, path in sorted(found.items()):
        part = part_of(module)
        if part == "cli":
            continue
        for target in imports(module, path):
            other = part_of(target)
            if other not in ALLOWED[part] | {part}:
                wrong.append(f"{path.relative_to(ROOT)} ({part}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_the_map_sees_a_wrong_door(tmp_path):
    """The check above reads relative imports and imports inside functions."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from ..evaluation import detection\n    import streamrnn.service.loop\n")
    assert imports("streamrnn.training.x", path) == {"streamrnn.evaluation", "streamrnn.service.loop"}
    assert part_of("streamrnn.evaluation") == "evaluation" and part_of("streamrnn.wire") == "core"


def test_a_subscriber_loads_neither_the_service_nor_numpy():
    """`import streamrnn.client` (the subscriber) loads nothing of the service and no numpy."""
    code = (
        "import sys, streamrnn.client; "
        "print(sorted(m for m in sys.modules if m.startswith('streamrnn.service') or m.split('.')[0] == 'numpy'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
