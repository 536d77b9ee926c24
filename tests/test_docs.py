"""The README's reference tables agree with the code they describe."""

from __future__ import annotations

import dataclasses
import re

from conftest import ROOT
from streamrnn.contract import METADATA
from streamrnn.service.config import ServiceConfig

README = (ROOT / "README.md").read_text()


def config_rows() -> dict[tuple[str, str], str]:
    """(table, key) -> the default cell, from the README's configuration table."""
    start = README.index("| key | flag | default | meaning |")
    rows: dict[tuple[str, str], str] = {}
    for line in README[start:].splitlines()[2:]:
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
    table = README[README.index("**Metadata** (`metadata_props`") : README.index("The runtime refuses, in one line")]
    documented = set(re.findall(r"`streamrnn\.(\w+)`", table))
    assert documented == set(METADATA), (sorted(set(METADATA) - documented), sorted(documented - set(METADATA)))
