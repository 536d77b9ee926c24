"""The documentation agrees with the code it describes: reference tables, the README's example, links."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from conftest import ROOT
from streamrnn.contract import METADATA
from streamrnn.service.config import ServiceConfig

README = (ROOT / "README.md").read_text()
SERVICE = (ROOT / "docs" / "service.md").read_text()
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def config_rows() -> dict[tuple[str, str], str]:
    """(table, key) -> the default cell, from the service manual's configuration table."""
    start = SERVICE.index("| key | flag | default | meaning |")
    rows: dict[tuple[str, str], str] = {}
    for line in SERVICE[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        names = re.findall(r"`([^`]+)`", cells[0])
        table = names.pop(0) if names[0].startswith("[") else ""
        defaults = cells[2].split(" / ")
        for n, key in enumerate(names):
            rows[(table, key)] = defaults[n] if len(defaults) == len(names) else cells[2]
    return rows


def config_fields() -> dict[tuple[str, str], object]:
    """(table, key) -> default, from the service's settings dataclasses."""
    found: dict[tuple[str, str], object] = {}
    for f in dataclasses.fields(ServiceConfig):
        if f.metadata.get("internal"):
            continue
        table = f.metadata.get("table")
        nested = table or (f.default_factory() if callable(f.default_factory) else None)
        if dataclasses.is_dataclass(nested):
            name = "[[models]]" if table else f"[{f.name}]"
            for g in dataclasses.fields(nested):
                found[(name, g.name)] = g.default
        else:
            found[("", f.name)] = f.default
    return found


def test_the_config_table_names_every_setting_and_its_default():
    rows, fields = config_rows(), config_fields()
    assert set(rows) == set(fields), (sorted(set(fields) - set(rows)), sorted(set(rows) - set(fields)))
    for key, default in fields.items():
        cell = rows[key]
        if isinstance(default, bool):
            assert cell == str(default).lower(), (key, cell, default)
        elif isinstance(default, (int, float)) and re.fullmatch(r"[0-9.]+", cell):
            assert float(cell) == default, (key, cell, default)
        elif isinstance(default, str) and default:
            assert cell.strip("`") == default, (key, cell, default)


def test_the_contract_table_names_every_metadata_key():
    """The documented contract lists every key a contract file may carry, and no other."""
    table = CONTRACT[
        CONTRACT.index("**Metadata** (`metadata_props`") : CONTRACT.index("The runtime refuses, in one line")
    ]
    documented = set(re.findall(r"`streamrnn\.(\w+)`", table))
    assert documented == set(METADATA), (sorted(set(METADATA) - documented), sorted(documented - set(METADATA)))


def test_the_readme_python_example_runs_as_it_says(tmp_path):
    """The README's first Python block, run as it stands away from the clone (the package as
    installed), prints the line it quotes and the six other words of the demo's commands."""
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    quoted = re.search(r"prints `([^`]+)`", README).group(1)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == quoted and len(lines) == 7, lines


def test_every_relative_link_in_the_docs_leads_somewhere():
    """Links between the README, docs/, the experiment logs and BENCHMARKS.md name files (and headings)
    that exist."""
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md"]
    pages += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "training" / "log").glob("*.md"))
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)]*))?\)", page.read_text()):
            path = page.parent / target if target else page
            if "://" in target:
                continue
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken


def anchors(page) -> set[str]:
    """The anchors GitHub gives a Markdown page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_manual_names_the_settings_a_reload_keeps():
    """The service manual's list of settings read at start only is the one the config marks."""
    text = SERVICE[SERVICE.index("Settings read at start only") :].split(") are kept as they were")[0]
    documented = {name.strip("[]") for name in re.findall(r"`([^`]+)`", text)}
    assert documented == set(ServiceConfig.at_start_only())
