"""The service end to end: real `streamrnn serve` processes, real sockets, a real subscriber."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import DEMO, DEMO_WORDS, ROOT, STREAMRNN, assert_demo_words, demo_frames, demo_pcm, ingest_service
from streamrnn.dev.harness import ServeProcess
from streamrnn.ingest_format import IngestHeader, ingest_message
from streamrnn.send import messages

COMMANDS = ROOT / "streamrnn" / "models" / "commands.onnx"


def test_file_source_detections_reach_a_subscriber(service):
    s = service("--model", "commands", "--source", DEMO, "--fast")
    code, log = s.finish()
    assert code == 0, log
    assert_demo_words(s.events, stream="demo")
    kinds = {e.kind for e in s.events}
    assert {"detection", "status", "heartbeat"} <= kinds
    seqs = [e.seq for e in s.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    final = s.final_status()
    assert final.state == "stopping" and final.frames >= demo_frames() and final.drops == 0
    assert "detection demo yes" in log


def test_a_file_that_fails_mid_read_is_scored_as_far_as_it_goes_and_the_exit_status_says_so(service, tmp_path):
    broken = tmp_path / "broken.flac"
    broken.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])  # cut off: the decoder loses sync
    s = service("--model", "commands", "--source", broken, "--fast")
    code, log = s.finish()
    assert code == 1 and "file:" in log and "broken.flac failed before their end (exit status 1)" in log, log
    assert s.final_status().problems == {"source_failures": 1}
    assert {"yes", "no", "up"} <= {e.label for e in s.events if e.kind == "detection"}  # the first half, scored


def test_a_file_sent_remotely_scores_exactly_as_the_file_source_reads_it(service, tmp_path):
    ingest = f"ipc://{tmp_path}/in"
    s = service("--model", "commands", "--source", DEMO, "--source", f"pull:{ingest}", "--fast", "--scores-rate", "1e6")
    sent = subprocess.run(
        STREAMRNN + ["send", DEMO, "--connect", ingest, "--stream", "remote", "--fast"], capture_output=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.stream == "remote" and e.label == "go", timeout=30)
    time.sleep(0.5)
    assert s.stop()[0] == 0

    def seen(stream: str, kind: str) -> list:
        return [
            (e.label, e.score, e.end, getattr(e, "scores", None))
            for e in s.events
            if e.kind == kind and e.stream == stream
        ]

    assert seen("remote", "detection") == seen("demo", "detection") and len(seen("demo", "detection")) >= 6
    remote, local = ({end: scores for _, _, end, scores in seen(x, "scores")} for x in ("remote", "demo"))
    common = set(remote) & set(local)  # scores events sample frames as the loop's steps fall
    assert len(common) >= 10 and all(remote[end] == local[end] for end in common)  # every label, to 5 decimals


def test_threshold_flags_apply_to_every_model_with_the_label(service, tmp_path):
    s = service("--model", "commands", "--model", "digits", "--source", DEMO, "--fast", "--threshold", "yes=1.0")
    code, _ = s.finish()
    assert code == 0
    found = {e.label for e in s.events if e.kind == "detection"}
    assert "yes" not in found and {"no", "up", "three", "seven"} <= found
    done = subprocess.run(
        STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--threshold", "seven=0.5", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "thresholds: seven not a label of any model (commands: yes, no," in done.stderr


def test_stdin_source(service):
    s = service("--model", "commands", "--source", "-", "--stdin-rate", "16000", stdin=subprocess.PIPE)
    s.collect(lambda e: e.kind == "status")
    pcm = (demo_pcm() * 32767).astype("<i2").tobytes()
    s.process.stdin.write(pcm[:12345])  # an odd split: half a sample waits for its other byte
    s.process.stdin.write(pcm[12345:])
    s.process.stdin.close()
    code, log = s.finish()
    assert code == 0, log
    assert_demo_words(s.events, stream="stdin")


def test_zmq_ingest_from_streamrnn_send(service, tmp_path):
    ingest = f"ipc://{tmp_path}/ingest"
    s = service("--model", "commands", "--source", f"pull:{ingest}")
    s.collect(lambda e: e.kind == "status")
    sent = subprocess.run(
        STREAMRNN + ["send", DEMO, "--connect", ingest, "--stream", "kitchen", "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=30)
    code, took, log = s.stop()
    assert code == 0 and took < 1.0, (code, took, log)
    assert_demo_words(s.events, stream="kitchen")
    assert s.final_status().state == "stopping"


def test_bad_ingest_is_counted_and_dropped_while_a_good_stream_goes_on(service, tmp_path):
    s, push = ingest_service(service, tmp_path)
    good = list(messages("good", demo_pcm(), 16000.0, "audio", 0.02))
    header = {"format": "s16le", "rate": 16000, "channels": 1, "seq": 0}
    bad = [
        [b"x", b"{}"],  # wrong part count
        [b"bad", b"{not json", b"\0\0"],  # bad JSON
        [b"bad", json.dumps({**header, "format": "mp3"}).encode(), b""],  # unknown format
        [b"bad", json.dumps(header).encode(), b"\0\0\0"],  # odd byte count
        [b"bad", json.dumps({**header, "format": "f32le"}).encode(), np.array([0.1, np.nan], "<f4").tobytes()],  # NaN
        [b"bad", json.dumps({**header, "rate": 1e9}).encode(), b"\0\0"],  # absurd rate
        [b"bad", json.dumps({**header, "start": -1.0}).encode(), b"\0\0"],  # a clock before 0
    ]
    for i, (parts, _) in enumerate(good):
        push.send_multipart(parts)
        if i < len(bad):
            push.send_multipart(bad[i])
        if i == 10:  # the good stream's sequence going backwards, then a gap
            push.send_multipart(good[3][0])
    silence = np.zeros(160, np.float32)
    push.send_multipart(ingest_message("gappy", IngestHeader("s16le", 16000, seq=0), silence))
    push.send_multipart(ingest_message("gappy", IngestHeader("s16le", 16000, seq=5, end=True), silence))
    s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=30)
    s.collect(lambda e: e.kind == "status" and e.problems.get("ingest_seq_gaps"), timeout=5)
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    assert_demo_words(s.events, stream="good")
    problems = s.final_status().problems
    for counter in (
        "ingest_bad_parts",
        "ingest_bad_header",
        "ingest_bad_format",
        "ingest_odd_bytes",
        "ingest_not_finite",
        "ingest_bad_rate",
        "ingest_bad_start",
        "ingest_seq_backwards",
        "ingest_seq_gaps",
    ):
        assert problems.get(counter) == 1, (counter, problems)


def test_a_stream_joined_midway_keeps_the_senders_clock(service, tmp_path):
    """A sender that outlived a restart of the service goes on at seq 160 (3.2 s in): the service
    has never seen the stream, and its `start` puts the stream's clock where the sender is, so the
    words after it are detected at their times in the recording, not 3.2 s early."""
    s, push = ingest_service(service, tmp_path)
    for parts, _ in list(messages("joined", demo_pcm(), 16000.0, "audio", 0.02))[160:]:
        push.send_multipart(parts)
    s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=30)
    push.close(linger=0)
    assert s.stop()[0] == 0
    later = DEMO_WORDS[2:7]  # up, down, left, stop, go
    found = [e for e in s.events if e.kind == "detection" and e.stream == "joined"]
    hits = [w for w, start, end in later if any(e.label == w and start - 0.2 <= e.end <= end + 0.6 for e in found)]
    assert len(hits) >= 4 and len(found) <= len(hits) + 1, found


def test_stream_that_stops_mid_chunk_expires_and_is_scored(service, tmp_path):
    s, push = ingest_service(service, tmp_path, "--idle-timeout", "0.5")
    cut = demo_pcm()[: int(1.57 * 16000) + 37]  # "yes", then silence stops mid-chunk
    for parts, _ in messages("cut", cut, 16000.0, "audio", 0.02):
        if json.loads(parts[1]).get("end"):
            break  # never say end: the stream just goes quiet
        push.send_multipart(parts)
    expired = s.collect(lambda e: e.kind == "status" and e.problems.get("streams_expired"), timeout=10)
    assert expired.problems["streams_expired"] == 1
    assert any(e.kind == "detection" and e.stream == "cut" and e.label == "yes" for e in s.events)
    push.close(linger=0)
    assert s.stop()[0] == 0


def signal_caught(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_sighup_while_starting_is_kept_and_acted_on_once_running(tmp_path):
    serve = ServeProcess(tmp_path, ["--model", "commands", "--source", f"pull:ipc://{tmp_path}/in"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not signal_caught(serve.process.pid, signal.SIGHUP) and time.monotonic() < deadline:
            time.sleep(0.001)
        loaded = Path(f"/proc/{serve.process.pid}/maps").read_text()
        serve.process.send_signal(signal.SIGHUP)  # before numpy, onnxruntime or the model are loaded
        assert "onnxruntime" not in loaded and "numpy" not in loaded
        serve.wait_notice("READY=1")
        time.sleep(0.5)
        code, _ = serve.stop()
        log = serve.log_text()
    finally:
        serve.close()
    assert code == 0, log
    assert "reload: " in log or "reloaded" in log, log


def test_sd_notify_ready_watchdog_stopping_on_a_real_socket(tmp_path):
    env = dict(os.environ, WATCHDOG_USEC="200000")
    args = ["--model", "commands", "--source", f"pull:ipc://{tmp_path}/in", "--publish", f"ipc://{tmp_path}/events"]
    service = ServeProcess(tmp_path, args, env=env, cwd=ROOT)
    try:
        service.wait_notice("READY=1", timeout=10)
        assert any(line.startswith("STATUS=") for line in service.notices)
        watchdogs = service.listen(0.6).count("WATCHDOG=1")
        assert watchdogs >= 3, service.notices  # every 0.1 s
        code, _ = service.stop()
        assert code == 0, service.log_text()
        service.wait_notice("STOPPING=1", timeout=1)
    finally:
        service.close()


def test_sighup_reload_is_whole_or_nothing_keeps_stream_time_and_says_what_it_kept(service, tmp_path):
    digits = tmp_path / "mine.onnx"
    shutil.copy(ROOT / "streamrnn" / "models" / "digits.onnx", digits)
    config = tmp_path / "streamrnn.toml"
    ingest = f"ipc://{tmp_path}/ingest"
    models = f'[[models]]\nmodel = "{COMMANDS}"\n[[models]]\nmodel = "{digits}"\n'
    config.write_text(f'sources = ["pull:{ingest}"]\n{models}')
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    pieces = [parts for parts, _ in messages("s", np.tile(demo_pcm(), 2), 16000.0, "audio", 0.02)]
    half = len(pieces) // 2
    for parts in pieces[:half]:  # one pass of the demo, the stream left open
        push.send_multipart(parts)
    s.collect(lambda e: e.kind == "detection" and e.label == "seven", timeout=30)
    # a config with a model that does not load and a new send_hwm: nothing at all changes
    config.write_text(f'sources = ["pull:{ingest}"]\nsend_hwm = 77\n{models}[[models]]\nmodel = "nosuch"\n')
    s.process.send_signal(signal.SIGHUP)
    failed = s.collect(lambda e: e.kind == "status" and e.problems.get("reload_failures"), timeout=10)
    assert failed.state == "running" and "reload failed, nothing changed" in failed.message
    assert [m["name"] for m in failed.models] == ["commands", "digits"]
    # thresholds for a label no model has: refused at reload as at start
    config.write_text(f'sources = ["pull:{ingest}"]\nthresholds = {{ nosuch = 0.5 }}\n{models}')
    s.process.send_signal(signal.SIGHUP)
    label = s.collect(lambda e: e.kind == "status" and e.problems.get("reload_failures") == 2, timeout=10)
    assert "thresholds: nosuch not a label of any model" in label.message
    # the digits file changes (loaded anew) and send_hwm changes (kept until a restart)
    shutil.copy(ROOT / "streamrnn" / "models" / "digits.onnx", digits)
    config.write_text(f'sources = ["pull:{ingest}"]\nsend_hwm = 77\n{models}')
    s.process.send_signal(signal.SIGHUP)
    reloaded = s.collect(lambda e: e.kind == "status" and e.state == "reloaded", timeout=10)
    assert "send_hwm changed: read at start only, kept until a restart" in reloaded.message
    for parts in pieces[half:]:  # the second pass, on the same stream
        push.send_multipart(parts)
    s.collect(lambda e: e.kind == "detection" and e.stream == "s" and e.end > 20 and e.label == "go", timeout=30)
    s.collect(lambda e: e.kind == "detection" and e.model == "digits" and e.end > 20, timeout=30)
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    assert not [e for e in s.events if e.kind == "status" and e.state == "reloaded" and e is not reloaded]
    second = [e for e in s.events if e.kind == "detection" and e.end > 12.8]
    assert {e.model for e in second} == {"commands", "digits"}  # both on the stream's clock after reload
    assert_demo_words([replace(e, start=e.start - 12.8, end=e.end - 12.8) for e in second if e.model == "commands"])


def test_slow_subscriber_does_not_stall_others_and_drops_are_counted(service, tmp_path):
    s, push = ingest_service(
        service, tmp_path, "--scores-rate", "1000", "--send-hwm", "50", topics=("detection", "status", "heartbeat")
    )  # filtered at the sender
    slow = zmq.Context.instance().socket(zmq.SUB)  # subscribes, never reads
    slow.setsockopt(zmq.RCVHWM, 5)
    slow.setsockopt(zmq.RCVBUF, 4096)
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    slow.connect(s.address)
    try:
        s.collect(lambda e: e.kind == "heartbeat" and e.subscribers == 2, timeout=10)
        streams = [f"room{i}" for i in range(16)]  # about 1 MB of events: more than socket buffers hold
        for stream in streams:
            for parts, _ in messages(stream, demo_pcm(), 16000.0, "audio", 0.02):
                push.send_multipart(parts)
        s.collect(lambda e: e.kind == "heartbeat" and e.frames >= 16 * demo_frames() and e.streams == 0, timeout=30)
        code, _, log = s.stop()
    finally:
        slow.close(linger=0)
        push.close(linger=0)
    assert code == 0, log
    assert s.final_status().drops > 0
    for stream in streams:  # the subscriber that reads got every detection all the same
        assert_demo_words(s.events, stream=stream)


def test_port_in_use_is_a_clear_error(tmp_path):
    blocker = zmq.Context.instance().socket(zmq.PUB)
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    try:
        done = subprocess.run(
            STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--publish", f"tcp://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        blocker.close(linger=0)
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"streamrnn: error: publish tcp://127.0.0.1:{port}: cannot bind (Address already in use)"
    )


@pytest.mark.parametrize(
    "config, message",
    [
        ('sources = ["x.wav"]\nbogus = 1\n[[models]]\nmodel = "commands"\n', "unknown key bogus"),
        (
            'sources = ["x.wav"]\nheartbeat = "often"\n[[models]]\nmodel = "commands"\n',
            "heartbeat = 'often' is not a float",
        ),
        (
            'sources = ["x.wav"]\n[[models]]\nmodel = "commands"\nthresholds = { yes = 2 }\n',
            "models[0].thresholds.yes = 2 is outside [0, 1]",
        ),
        (
            'sources = ["x.wav"]\n[[models]]\nmodel = "commands"\nthresholds = { maybe = 0.5 }\n',
            "models[0].thresholds: maybe not a label",
        ),
        ('sources = ["x.wav"]\n[[models]]\nmodel = "nosuch"\n', "model 'nosuch' not found"),
        ('sources = ["/no/such.wav"]\n[[models]]\nmodel = "commands"\n', "source /no/such.wav: cannot read audio"),
        ('[[models]]\nmodel = "commands"\n', "sources is empty"),
        (
            'sources = ["x.wav"]\n[decision]\npatience = -1\n[[models]]\nmodel = "commands"\n',
            "decision.patience = -1 must not be negative",
        ),
        (
            'sources = ["x.wav"]\n[[models]]\nmodel = "commands"\ngate_dbfs = 3\n',
            "models[0].gate_dbfs = 3 must be below 0 dBFS (0: off)",
        ),
        (
            'sources = ["x.wav"]\n[[models]]\nmodel = "motions"\ngate_dbfs = -50\n',
            "models[0].gate_dbfs: ",
        ),
        (
            'sources = ["pull:tcp://0.0.0.0:5557"]\n[[models]]\nmodel = "commands"\n',
            "sources tcp://0.0.0.0:5557 is reachable from other machines: set [security] server_key and clients",
        ),
        (
            'sources = ["x.wav"]\npublish = "tcp://*:5556"\n[[models]]\nmodel = "commands"\n',
            "publish tcp://*:5556 is reachable from other machines",
        ),
        (
            'sources = ["x.wav"]\n[security]\nserver_key = "none.key_secret"\nclients = "."\n'
            '[[models]]\nmodel = "commands"\n',
            "security none.key_secret: not a ZeroMQ key file",
        ),
    ],
)
def test_bad_config_stops_start_up_in_one_line(tmp_path, config, message):
    (tmp_path / "x.wav").write_bytes(DEMO.read_bytes())
    path = tmp_path / "c.toml"
    path.write_text(config)
    for extra in (["--check"], []):
        done = subprocess.run(
            STREAMRNN + ["serve", "--config", path, *extra], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 1
        assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_check_finds_every_problem_that_would_stop_start_up(tmp_path):
    held = zmq.Context.instance().socket(zmq.PULL)
    port = held.bind_to_random_port("tcp://127.0.0.1")  # a port already in use
    path = tmp_path / "c.toml"
    path.write_text(
        f'sources = ["pull:notanaddr", "pull:127.0.0.1:5557", "pull:ipc://{tmp_path}/same", '
        f'"pull:tcp://127.0.0.1:{port}"]\npublish = "ipc://{tmp_path}/same"\n[[models]]\nmodel = "commands"\n'
    )
    done = subprocess.run(
        STREAMRNN + ["serve", "--config", path, "--check", "--log-level", "loud"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and all(line.startswith("streamrnn: error: ") for line in lines), done.stderr
    for expected in (
        "log_level = 'loud' is not one of debug, info, warning, error",
        "sources 'notanaddr' is not a ZeroMQ address",
        "sources '127.0.0.1:5557' is not a ZeroMQ address",
        f"bind ipc://{tmp_path}/same more than once",
    ):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    (tmp_path / "afile").write_text("")  # a capture folder that cannot be made (as a sandbox refuses one)
    path.write_text(
        f'sources = ["pull:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "nosuch"\n'
        f'[capture]\ndir = "{tmp_path}/afile/captures"\n'
    )
    done = subprocess.run(
        STREAMRNN + ["serve", "--config", path, "--check"], capture_output=True, text=True, timeout=60
    )
    held.close(linger=0)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 3, done.stderr
    assert "model 'nosuch' not found" in done.stderr and "Address already in use" in done.stderr
    assert f"capture.dir {tmp_path}/afile/captures: cannot write captures there (Not a directory)" in done.stderr


def test_a_second_service_on_a_live_ipc_path_is_refused(service, tmp_path):
    s = service("--model", "commands", "--source", f"pull:ipc://{tmp_path}/in")
    s.collect(lambda e: e.kind == "status")
    second = subprocess.run(
        STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--publish", s.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"publish {s.address}: cannot bind (another process is listening there)" in second.stderr
    assert s.stop()[0] == 0


def test_check_accepts_a_good_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'sources = ["{DEMO}", "pull:tcp://127.0.0.1:5557"]\n[[models]]\nmodel = "commands"\n'
        "thresholds = { yes = 0.8 }\n[decision]\nsmoothing = 4\n"
    )
    done = subprocess.run(
        STREAMRNN + ["serve", "--config", path, "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "OK (1 model(s), 2 source(s))" in done.stdout


def test_a_stream_id_used_again_starts_a_fresh_stream(service, tmp_path):
    s, push = ingest_service(service, tmp_path)
    yes = demo_pcm()[: int(1.8 * 16000)]
    for _ in range(2):  # ended and reused at once, then restarted from seq 0 without an end
        for parts, _ in messages("again", yes, 16000.0, "audio", 0.02):
            push.send_multipart(parts)
    for parts, _ in list(messages("again", yes, 16000.0, "audio", 0.02))[:-1]:
        push.send_multipart(parts)
    for parts, _ in messages("again", yes, 16000.0, "audio", 0.02):
        push.send_multipart(parts)
    s.collect(lambda e: e.kind == "status" and e.problems.get("streams_restarted"), timeout=20)
    s.collect(lambda e: sum(x.kind == "detection" and x.label == "yes" for x in s.events) >= 4, timeout=20)
    push.close(linger=0)
    code, _, log = s.stop()
    assert code == 0, log
    yeses = [e for e in s.events if e.kind == "detection" and e.stream == "again"]
    assert [e.label for e in yeses] == ["yes"] * 4
    assert all(0.5 <= e.end <= 1.8 for e in yeses)  # each run counts stream time from 0
