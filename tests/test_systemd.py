"""The systemd units and example config: they verify, and they ask for what the service does."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO, ROOT, STREAMRNN

UNITS = ROOT / "systemd"
EXECUTABLE = Path(sys.executable).parent / "streamrnn"


def installed_copy(tmp_path, name: str) -> Path:
    """The unit with ExecStart pointing at this environment's streamrnn (verify checks it exists)."""
    text = (UNITS / name).read_text().replace("/usr/local/bin/streamrnn", str(EXECUTABLE))
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize(
    "unit, check",
    [("streamrnn.service", "streamrnn.service"), ("streamrnn@.service", "streamrnn@kitchen.service")],
)
def test_units_verify_without_complaint(tmp_path, unit, check):
    installed_copy(tmp_path, unit)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / check)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", ["streamrnn.service", "streamrnn@.service"])
def test_units_use_notify_watchdog_and_hardening(unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / unit)
    service = parser["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0
    for key in (
        "DynamicUser",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "RuntimeDirectory",
        "SupplementaryGroups",
        "ExecReload",
    ):
        assert key in service, key
    assert service["ProtectSystem"] == "strict" and service["SupplementaryGroups"] == "audio"
    config = "%i.toml" if "@" in unit else "streamrnn.toml"
    assert service["ExecStart"].endswith(f"serve --config /etc/streamrnn/{config}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["streamrnn.service", "streamrnn@.service"])
def test_units_expose_little_to_systemd_analyze_security(tmp_path, unit):
    path = installed_copy(tmp_path, unit)
    if "@" in unit:
        path = path.rename(tmp_path / "streamrnn@kitchen.service")
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    print(unit, "exposure", found.group(1))
    assert float(found.group(1)) <= 2.0


@pytest.mark.parametrize("config", ["streamrnn.toml", "wyoming.toml"])
def test_example_config_is_valid(config):
    sources = ["--source", DEMO] if config == "streamrnn.toml" else []  # the microphone replaced by a file
    done = subprocess.run(
        STREAMRNN + ["serve", "--config", UNITS / config, *sources, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
