"""The systemd units and example config: they verify, and they ask for what the service does."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO, ROOT, STREAMRNN, Service, assert_demo_words, free_tcp_address

UNITS = ROOT / "systemd"
EXECUTABLE = Path(sys.executable).parent / "streamrnn"


def installed_copy(tmp_path, name: str) -> Path:
    """The unit with ExecStart pointing at this environment's streamrnn (verify checks it exists)."""
    text = (UNITS / name).read_text().replace("/opt/streamrnn/bin/streamrnn", str(EXECUTABLE))
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


def test_install_script_gives_a_service_that_runs(tmp_path):
    """systemd/install.sh (a venv under /opt/streamrnn, as Debian 12 refuses `sudo pip install`),
    here under a temporary prefix: the units run the venv's streamrnn, the example configs are in
    place and serve (checked), and the models folder the units see is there."""
    where = {name: tmp_path / name for name in ("PREFIX", "ETC", "UNITS", "STATE")}
    env = {**os.environ, **{k: str(v) for k, v in where.items()}, "EXTRAS": ""}
    done = subprocess.run(["sh", UNITS / "install.sh"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    program = where["PREFIX"] / "bin" / "streamrnn"
    for unit in ("streamrnn.service", "streamrnn@.service"):
        text = (where["UNITS"] / unit).read_text()
        assert f"ExecStart={program} serve --config {where['ETC']}/" in text
    assert (UNITS / "streamrnn.service").read_text().count("ExecStart=/opt/streamrnn/bin/streamrnn ") == 1
    assert (where["STATE"] / "models").is_dir()
    config = where["ETC"] / "streamrnn.toml"
    check = subprocess.run(
        [program, "serve", "--config", config, "--source", DEMO, "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr


SAMPLES = ROOT / "streamrnn" / "samples"
# every shipped config served on recordings of what its models are for: (sources, the words expected)
SERVED = {
    "streamrnn.toml": ([DEMO], {"yes", "no", "up", "down", "left", "stop", "go"}),
    "wyoming.toml": (
        [SAMPLES / "wake.flac", SAMPLES / "wake_ha.flac"],
        {"computer", "jarvis", "hey jarvis", "okay nabu"},
    ),
}


@pytest.mark.parametrize("config", sorted(SERVED))
def test_every_shipped_config_finds_every_word(service, config):
    """A shipped config keeps each model's own decisions (an example that set the log-mel models'
    smoothing 3 and patience 2 found 5 of the demo's 7 words with the 80-ms models): served on the
    bundled recordings (its sources replaced by them), every word is found and nothing else."""
    files, words = SERVED[config]
    assert {p.name for p in UNITS.glob("*.toml")} == set(SERVED), "a shipped config without a test"
    sources = [arg for f in files for arg in ("--source", f)]
    s = service("--config", UNITS / config, *sources, "--fast")
    code, _ = s.finish()
    assert code == 0
    found = {e.label for e in s.events if e.kind == "detection"}
    assert found == words, found


FILTERED = """
import errno, os, sys
import pyseccomp
allowed = open(sys.argv[1]).read().split()
flt = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))  # SystemCallErrorNumber=EPERM
for name in allowed:
    try:
        flt.add_rule(pyseccomp.ALLOW, name)
    except Exception:
        pass  # not a system call of this architecture
flt.load()
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
ALWAYS_ALLOWED = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}  # by systemd


def syscall_group(name: str) -> set[str]:
    """The system calls of a systemd group (@name), nested groups expanded."""
    lines = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True)
    calls: set[str] = set()
    for line in lines.stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= syscall_group(entry) if entry.startswith("@") else {entry}
    return calls


def unit_allows(unit: str) -> set[str]:
    """What the unit's SystemCallFilter= lines allow, as systemd reads them: the first (an allow
    list) sets what is allowed, each `~` line takes its calls away."""
    allowed: set[str] = set()
    for value in re.findall(r"^SystemCallFilter=(.*)$", (UNITS / unit).read_text(), re.M):
        names = value.removeprefix("~").split()
        calls = set().union(*(syscall_group(n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - calls if value.startswith("~") else allowed | calls
    return allowed | ALWAYS_ALLOWED


def filtered_command(tmp_path, unit: str) -> list[str]:
    """A Python command line that runs under `unit`'s system-call filter, loaded with libseccomp as
    systemd loads it (no systemd here to run the unit), checked to be in force."""
    pytest.importorskip("pyseccomp")
    allowed = tmp_path / "allowed"
    allowed.write_text("\n".join(sorted(unit_allows(unit))))
    wrapper = tmp_path / "filtered.py"
    wrapper.write_text(FILTERED)
    filtered = [sys.executable, str(wrapper), str(allowed)]
    refused = subprocess.run(filtered + ["-c", "import os; os.sched_setaffinity(0, {0})"], capture_output=True)
    assert refused.returncode == 1 and b"PermissionError: [Errno 1]" in refused.stderr  # the filter is in force
    return filtered


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


@needs_systemd_analyze
@pytest.mark.parametrize("unit", ["streamrnn.service", "streamrnn@.service"])
def test_the_service_runs_under_the_units_system_call_filter(tmp_path, unit):
    """A file, two models, captures, metrics and publishing under the unit's filter."""
    filtered = filtered_command(tmp_path, unit)
    kept = tmp_path / "kept"
    args = ["--model", "commands", "--model", "computer", "--source", DEMO, "--fast", "--capture-dir", kept]
    s = Service(tmp_path, *args, "--metrics", free_tcp_address().removeprefix("tcp://"), python=filtered)
    try:
        code, log = s.finish()
    finally:
        s.close()
    assert code == 0 and "not permitted" not in log, log
    assert_demo_words(s.events, stream="demo")
    assert len(list(kept.glob("*.flac"))) >= 6 and not s.final_status().problems, s.final_status()


@needs_systemd_analyze
def test_the_microphone_works_under_the_units_system_call_filter(tmp_path, alsa_home):
    """PortAudio on ALSA (a file device reading the demo) under the filter, stopped by SIGTERM as
    systemd stops it. (That device has no clock: past the recording it gives silence faster than
    real time, counted as queue overflows, so problems are not asserted here.)"""
    pytest.importorskip("sounddevice", exc_type=OSError)
    filtered = filtered_command(tmp_path, "streamrnn.service")
    mic = ["--source", "mic:recorded", "--mic-rate", "16000"]
    s = Service(tmp_path, "--model", "commands", *mic, env=alsa_home, python=filtered)
    try:
        s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=60)
        code, _, log = s.stop()
    finally:
        s.close()
    assert code == 0 and "not permitted" not in log, log
    assert_demo_words(s.events, stream="mic")
    assert s.final_status().sources == {"mic:recorded": "running"}, s.final_status()
