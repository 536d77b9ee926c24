"""Captured detections from a real service: the audio around each detection as FLAC with its
event as JSON, the size cap, and a folder that fails under the service."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import soundfile as sf

from conftest import DEMO, STREAMRNN


def captures(folder) -> list[tuple[dict, float]]:
    """(event, seconds of audio) of each capture, oldest first."""
    found = []
    for path in sorted(folder.glob("*.json")):
        found.append((json.loads(path.read_text()), sf.info(str(path.with_suffix(".flac"))).duration))
    return found


def test_every_detection_is_kept_with_the_audio_around_it(service, tmp_path):
    folder = tmp_path / "captures"
    s = service("--model", "commands", "--model", "digits", "--source", DEMO, "--fast", "--capture-dir", folder)
    code, log = s.finish()
    assert code == 0, log
    published = {e.seq: e.to_dict() for e in s.events if e.kind == "detection"}
    kept = captures(folder)
    assert len(kept) == len(published) >= 8
    length = sf.info(str(DEMO)).duration
    for event, seconds in kept:
        assert event == published[event["seq"]]  # the event as it was published
        expected = min(event["end"] + 0.5, length) - max(0.0, event["start"] - 1.5)  # before 1.5 s, after 0.5 s
        assert abs(seconds - expected) < 0.01, (event["label"], seconds, expected)


def test_past_the_size_cap_the_oldest_captures_go_first(service, tmp_path):
    folder = tmp_path / "captures"
    config = tmp_path / "c.toml"
    config.write_text(
        f'sources = ["{DEMO}"]\n[[models]]\nmodel = "commands"\n[capture]\ndir = "{folder}"\nmax_mb = 0.05\n'
    )
    s = service("--config", config, "--fast")
    code, log = s.finish()
    assert code == 0, log
    seqs = sorted(e.seq for e in s.events if e.kind == "detection")
    kept = sorted(event["seq"] for event, _ in captures(folder))
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 0.05e6 and kept == seqs[len(seqs) - len(kept) :] and 0 < len(kept) < len(seqs), (kept, size)


def test_a_folder_that_fails_under_the_service_is_counted_and_recognition_goes_on(service, tmp_path):
    folder = tmp_path / "captures"
    s = service("--model", "commands", "--source", DEMO, "--capture-dir", folder)  # at real time
    s.collect(lambda e: e.kind == "detection" and e.label == "no", timeout=30)
    time.sleep(1.0)
    shutil.rmtree(folder)
    folder.write_text("not a folder any more")
    code, log = s.finish()
    assert code == 0, log
    assert s.final_status().problems.get("capture_failures", 0) >= 3, s.final_status().problems
    assert {"up", "down", "go"} <= {e.label for e in s.events if e.kind == "detection"}


def test_a_capture_dir_that_is_a_file_stops_start_up_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    done = subprocess.run(
        STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--capture-dir", tmp_path / "file", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "capture.dir" in done.stderr, done.stderr


def test_near_misses_are_kept_apart_and_never_published(service, tmp_path):
    folder = tmp_path / "captures"
    config = tmp_path / "c.toml"
    config.write_text(f'[capture]\ndir = "{folder}"\nnear_misses = true\n')
    s = service("--config", config, "--model", "commands", "--source", DEMO, "--fast", "--threshold", "yes=1.0")
    code, log = s.finish()
    assert code == 0, log
    fired = [e for e in s.events if e.kind == "detection"]
    near = captures(folder / "near-misses")
    assert "yes" not in {e.label for e in fired} and len(captures(folder)) == len(fired) >= 5
    yes = [event for event, _ in near if event["label"] == "yes"]
    assert len(yes) == 1 and yes[0]["seq"] is None and 0.5 <= yes[0]["score"] < 1.0, near
    assert 0.8 < yes[0]["start"] < 1.3  # "yes" is said at about 1 s of the recording
