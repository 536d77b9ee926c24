"""Prometheus metrics of a real service, scraped over HTTP and read with prometheus-client's
own parser."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEMO, STREAMRNN, free_tcp_address
from streamrnn.samples import sample

WAKE = sample("wake.flac")


def scrape(address: str) -> dict[str, dict]:
    """{family name: {sample name + labels: value}} of one scrape."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def test_metrics_count_what_the_service_does(service, tmp_path):
    metrics = free_tcp_address().removeprefix("tcp://")
    ingest = f"ipc://{tmp_path}/in"
    s = service("--model", "commands", "--source", f"pull:{ingest}", "--metrics", metrics)
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    push.send_multipart([b"bad", b"{not json", b""])
    push.close(linger=1000)
    sent = subprocess.run(
        STREAMRNN + ["send", DEMO, "--connect", ingest, "--stream", "kitchen", "--fast"],
        capture_output=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=30)
    s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=30)
    families = scrape(metrics)
    detections = [e for e in s.events if e.kind == "detection"]
    code, _, log = s.stop()
    assert code == 0, log
    counted = families["streamrnn_detections"]
    assert counted[("streamrnn_detections_total", (("label", "go"), ("model", "commands")))] == 1
    assert sum(counted.values()) == len(detections)
    assert families["streamrnn_frames"][("streamrnn_frames_total", ())] == s.final_status().frames
    assert families["streamrnn_problems"][("streamrnn_problems_total", (("kind", "ingest_bad_header"),))] == 1
    assert families["streamrnn_streams"][("streamrnn_streams", ())] == 0
    assert families["streamrnn_subscribers"][("streamrnn_subscribers", ())] == 1
    assert 0 < families["streamrnn_model_load_seconds"][("streamrnn_model_load_seconds", (("model", "commands"),))] < 30
    assert families["process_resident_memory_bytes"][("process_resident_memory_bytes", ())] > 20e6
    for histogram in ("streamrnn_tick_seconds", "streamrnn_input_lag_seconds"):
        assert families[histogram][(f"{histogram}_count", ())] > 10, histogram


@pytest.mark.parametrize(
    "address, message", [("9464", "metrics '9464' is not HOST:PORT"), ("127.0.0.1:99999", "is not HOST:PORT")]
)
def test_a_bad_metrics_address_stops_start_up_in_one_line(address, message):
    done = subprocess.run(
        STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--metrics", address, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_gated_model_counts_the_frames_it_did_not_run(service, tmp_path):
    """The gate in a served model: the wake word still fires on the bundled wake phrases, the
    quiet between them is counted as gated frames, and the frames its check looked at as checked."""
    metrics = free_tcp_address().removeprefix("tcp://")
    ingest = f"ipc://{tmp_path}/in"
    config = tmp_path / "gate.toml"
    config.write_text(f'sources = ["pull:{ingest}"]\n[[models]]\nmodel = "computer"\ngate_dbfs = -50\n')
    s = service("--config", config, "--metrics", metrics)
    s.collect(lambda e: e.kind == "status")
    sent = subprocess.run(
        STREAMRNN + ["send", WAKE, "--connect", ingest, "--stream", "hall", "--fast"], capture_output=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.label == "computer", timeout=30)
    s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=30)
    scraped = scrape(metrics)
    gated = scraped["streamrnn_gated_frames"][("streamrnn_gated_frames_total", (("model", "computer"),))]
    checked = scraped["streamrnn_checked_frames"][("streamrnn_checked_frames_total", (("model", "computer"),))]
    code, _, log = s.stop()
    assert code == 0, log
    assert 0.3 * s.final_status().frames < gated < s.final_status().frames
    assert 1 <= checked < 0.1 * s.final_status().frames  # the bundled `computer` looks again at its candidates
