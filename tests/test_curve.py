"""CURVE end to end: key pairs from `streamrnn keys`, a service that lets in only the clients
whose public keys are in its folder, `send` and `listen` with keys; a client without an allowed
key gets nothing in and nothing out."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
import zmq

from conftest import DEMO, ROOT, STREAMRNN, assert_demo_words, demo_pcm
from streamrnn.client import RefusedError, Subscription
from streamrnn.keys import ClientKeys, KeyFileError
from streamrnn.send import messages


def make_keys(folder, name, *more):
    done = subprocess.run(
        STREAMRNN + ["keys", name, "--dir", folder, *more], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and "secret key" in done.stdout, done.stderr


def push_demo(address: str, stream: str, keys: ClientKeys | None) -> None:
    """The demo recording pushed as `stream` from this process, given up on after a second."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 1000)
    if keys:
        keys.apply(push)
    push.connect(address)
    try:
        for parts, _ in messages(stream, demo_pcm()[:48000], 16000.0, "audio", 0.02):
            push.send_multipart(parts)
    except zmq.Again:
        pass  # never let in: nothing takes the messages
    push.close(linger=0)


def test_only_allowed_keys_get_in_or_out(service, tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys, "server")
    make_keys(tmp_path / "alice", "alice", "--allow", keys / "clients")  # her public key let in, her secret hers
    make_keys(tmp_path / "other", "mallory")
    ingest = f"ipc://{tmp_path}/in"
    config = tmp_path / "curve.toml"
    config.write_text(
        f'sources = ["pull:{ingest}"]\n[[models]]\nmodel = "commands"\n'
        f'[security]\nserver_key = "{keys}/server.key_secret"\nclients = "{keys}/clients"\n'
    )
    alice = ClientKeys.load(keys / "server.key", tmp_path / "alice" / "alice.key_secret")
    mallory = ClientKeys.load(keys / "server.key", tmp_path / "other" / "mallory.key_secret")
    s = service("--config", config, keys=alice)
    s.collect(lambda e: e.kind == "status")
    outsiders = [Subscription(s.address, keys=mallory), Subscription(s.address)]
    push_demo(ingest, "mallory", mallory)
    push_demo(ingest, "anyone", None)
    curve = ["--server-key", keys / "server.key", "--key", tmp_path / "alice" / "alice.key_secret"]
    sent = subprocess.run(
        STREAMRNN + ["send", DEMO, "--connect", ingest, "--stream", "alice", "--fast", *curve],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.stream == "alice" and e.label == "go", timeout=30)
    listened = subprocess.run(
        STREAMRNN + ["listen", "--connect", s.address, "--topic", "heartbeat", "--count", "1", *curve],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    refused = subprocess.run(  # mallory's key: said in one line, not a silent wait
        STREAMRNN
        + ["listen", "--connect", s.address, "--server-key", keys / "server.key"]
        + ["--key", tmp_path / "other" / "mallory.key_secret"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    heard_by_outsiders = [sub.receive(timeout=1.0) for sub in outsiders[1:]]
    with pytest.raises(RefusedError, match="the service refused this client's CURVE key"):
        outsiders[0].receive(timeout=5.0)
    time.sleep(0.1)
    code, _, log = s.stop()
    for sub in outsiders:
        sub.close()
    assert code == 0, log
    assert listened.returncode == 0 and '"kind":"heartbeat"' in listened.stdout.replace(" ", ""), listened.stderr
    assert_demo_words(s.events, stream="alice")
    assert {e.stream for e in s.events if e.stream} == {"alice"}  # nothing from mallory or anyone got in
    assert heard_by_outsiders == [None]  # heartbeats every 0.5 s, and not one reached the keyless one
    assert refused.returncode == 1 and "refused this client's CURVE key" in refused.stderr, refused.stderr
    assert s.final_status().frames == -(-len(demo_pcm()) // 1280)  # alice's frames alone were scored
    assert s.final_status().problems["curve_refused"] >= 2  # mallory's subscriber and sender, each counted
    assert re.search(r"CURVE: client key \S+ from \S+ refused \(not in ", log), log  # who, and why


def test_secret_keys_stay_secret(tmp_path):
    """`keys` writes the secret key for its owner alone and the public key for all; a secret key
    others can read is refused in one line saying how to fix it; `--allow` puts only the public key
    among a service's allowed clients, and a secret key found there stops `serve --check`."""
    make_keys(tmp_path / "me", "kitchen", "--allow", tmp_path / "clients")
    secret = tmp_path / "me" / "kitchen.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "me" / "kitchen.key").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "clients").iterdir()) == ["kitchen.key"]
    make_keys(tmp_path, "server")
    secret.chmod(0o644)
    with pytest.raises(KeyFileError, match=f"{secret}: a secret key that other users can read .*: chmod 600 {secret}"):
        ClientKeys.load(tmp_path / "server.key", secret)
    (tmp_path / "clients" / "kitchen.key_secret").write_bytes(secret.read_bytes())  # the old README's mistake
    config = tmp_path / "curve.toml"
    config.write_text(
        f'sources = ["pull:ipc://{tmp_path}/in"]\n[[models]]\nmodel = "commands"\n'
        f'[security]\nserver_key = "{tmp_path}/server.key_secret"\nclients = "{tmp_path}/clients"\n'
    )
    done = subprocess.run(
        STREAMRNN + ["serve", "--config", config, "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"{tmp_path}/clients/kitchen.key_secret: a secret key in the folder of allowed client keys" in done.stderr


def test_a_revoked_key_is_out_at_once_and_a_bad_key_file_refuses_the_reload(service, tmp_path):
    """Bob's public key removed and SIGHUP: his subscriber, connected before, hears nothing more
    and his sender's new stream never starts, while Alice goes on. A key file that is no key in
    the clients folder makes the reload fail whole, naming it (Bob stays out), and --check says so."""
    keys = tmp_path / "keys"
    make_keys(keys, "server")
    for name in ("alice", "bob"):
        make_keys(tmp_path / name, name, "--allow", keys / "clients")
    ingest = f"ipc://{tmp_path}/in"
    config = tmp_path / "curve.toml"
    config.write_text(
        f'sources = ["pull:{ingest}"]\n[[models]]\nmodel = "commands"\n'
        f'[security]\nserver_key = "{keys}/server.key_secret"\nclients = "{keys}/clients"\n'
    )
    alice, bob = (ClientKeys.load(keys / "server.key", tmp_path / n / f"{n}.key_secret") for n in ("alice", "bob"))
    s = service("--config", config, keys=alice)
    s.collect(lambda e: e.kind == "status")
    bobs_ear = Subscription(s.address, keys=bob)
    assert bobs_ear.receive(timeout=3.0) is not None  # in, before the revocation
    (keys / "clients" / "bob.key").unlink()
    s.process.send_signal(signal.SIGHUP)
    s.collect(lambda e: e.kind == "status" and e.state == "reloaded", timeout=10)
    time.sleep(0.5)  # connections made anew: Alice's subscription is back, Bob's refused
    while bobs_ear._socket.poll(0):  # what reached him before the reload took effect
        bobs_ear._socket.recv_multipart()
    try:
        heard = bobs_ear.receive(timeout=3.0)  # heartbeats every 0.5 s: not one reaches him
    except RefusedError:
        heard = None
    bobs_ear.close()
    push_demo(ingest, "bob", bob)
    (keys / "clients" / "broken.key").write_text("not a key\n")
    s.process.send_signal(signal.SIGHUP)
    failed = s.collect(lambda e: e.kind == "status" and "reload failed" in e.message, timeout=10)
    checked = subprocess.run(STREAMRNN + ["serve", "--config", config, "--check"], capture_output=True, text=True)
    push_demo(ingest, "bob2", bob)
    s.collect(lambda e: e.kind == "heartbeat", timeout=5)  # Alice still hears the service
    code, _, log = s.stop()
    assert code == 0, log
    assert "broken.key" in failed.message and s.final_status().problems["reload_failures"] == 1
    assert checked.returncode == 1 and f"{keys}/clients/broken.key: not a ZeroMQ key file" in checked.stderr
    assert not {e.stream for e in s.events if e.kind == "detection"}  # nothing of Bob's got in
    assert heard is None and "1 revoked" in log
    assert re.search(r"CURVE: client key \S+ from \S+ refused", log)  # Bob, asked again
