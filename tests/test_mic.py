"""The microphone path through PortAudio, on ALSA devices defined in a private ~/.asoundrc:
a `file` device whose capture side reads the demo recording as raw PCM."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import DEMO, ROOT, STREAMRNN, Service, assert_demo_words

try:
    import sounddevice  # noqa: F401
except OSError as exc:  # PortAudio itself missing: the README's test command installs it
    pytest.skip(f"PortAudio not available ({exc})", allow_module_level=True)


def test_microphone_detections_through_portaudio(tmp_path, alsa_home):
    s = Service(tmp_path, "--model", "commands", "--source", "mic:recorded", "--mic-rate", "16000", env=alsa_home)
    try:
        s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=60)
        code, _, log = s.stop()
    finally:
        s.close()
    assert code == 0, log
    assert_demo_words(s.events, stream="mic")
    assert any(e.kind == "status" and e.sources.get("mic:recorded") == "running" for e in s.events)


def test_microphone_that_fails_is_retried_and_reported(tmp_path, alsa_home):
    s = Service(tmp_path, "--model", "commands", "--source", "mic:recorded", "--mic-rate", "1", env=alsa_home)
    try:
        status = s.collect(lambda e: e.kind == "status" and e.problems.get("mic_retries", 0) >= 2, timeout=20)
        assert status.sources["mic:recorded"].startswith("retrying: Error opening InputStream")
        code, took, log = s.stop()
    finally:
        s.close()
    assert code == 0 and took < 1.0
    assert "retrying in 0.5 s" in log  # later retries are counted; their log lines are rate-limited


def test_no_input_device_lists_devices_and_suggests_other_sources(tmp_path):
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\n")
    done = subprocess.run(
        STREAMRNN
        + ["serve", "--model", "commands", "--source", "mic:nosuchdevice", "--publish", f"ipc://{tmp_path}/events"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.count("\n") == 0 and "source mic:nosuchdevice: no such input device" in line
    assert "input devices:" in line and "use --source FILE or --source - instead" in line


def test_a_microphone_that_floods_cannot_crowd_out_a_remote_stream(tmp_path, alsa_home):
    """The `recorded` device has no clock: past the recording it gives silence as fast as it is
    read, far over what the loop takes. Its overflow is its own; a remote stream sent beside it
    keeps every word."""
    ingest = f"ipc://{tmp_path}/ingest"
    mic = ["--source", "mic:recorded", "--mic-rate", "16000"]
    s = Service(tmp_path, "--model", "commands", *mic, "--source", f"pull:{ingest}", env=alsa_home)
    try:
        s.collect(lambda e: e.kind == "status")
        sent = subprocess.run(STREAMRNN + ["send", str(DEMO), "--connect", ingest, "--stream", "remote", "--fast"])
        s.collect(lambda e: e.kind == "detection" and e.stream == "remote" and e.label == "go", timeout=60)
        code, _, log = s.stop()
    finally:
        s.close()
    assert sent.returncode == 0 and code == 0, log
    assert_demo_words(s.events, stream="remote")
    assert s.final_status().problems["queue_overflows"] > 0
    assert "input from mic:recorded dropped" in log and "input from pull" not in log, log
