"""The service's stream pipeline in-process (no sockets, threads or subprocess): the real
`commands` model, the real demo recording, events and problems collected as they come."""

from __future__ import annotations

import threading
import time

import numpy as np

from conftest import DEMO, assert_demo_words
from streamrnn.audio import read_native
from streamrnn.service.capture import Capturer
from streamrnn.service.config import load_config
from streamrnn.service.loop import Service
from streamrnn.service.pipeline import Pipeline, load_slot
from streamrnn.service.sources import Samples, Source, SourceState
from streamrnn.wire import Event, Stamper


def test_the_pipeline_finds_the_demo_words_and_counts_what_it_drops():
    config = load_config(None, {"models": ["commands"], "sources": [str(DEMO)]})
    events: list[Event] = []
    problems: list[str] = []
    stamper = Stamper()

    def publish(event: Event) -> Event:
        events.append(stamper.stamp(event))
        return events[-1]

    pipeline = Pipeline(
        [load_slot(config, config.models[0], 0)],
        publish=publish,
        problem=lambda counter, message: problems.append(counter),
    )
    audio, rate = read_native(DEMO)  # 16 kHz
    for start in range(0, len(audio), 1234):  # pieces that never line up with the model's chunks
        pipeline.feed(Samples("demo", audio[start : start + 1234], rate))
        pipeline.run_models()
    assert pipeline.changed and list(pipeline.streams) == ["demo"]
    pipeline.feed(Samples("demo", np.zeros(100, np.float32), 44100.0))  # a new rate mid-stream: dropped
    pipeline.feed(Samples("imu", np.zeros((50, 7), np.float32), 50.0, "sensor"))  # no model takes it
    pipeline.end_stream("demo")
    pipeline.run_models()
    pipeline.drop_ended_streams()
    assert_demo_words(events, stream="demo")
    assert problems == ["format_changes", "streams_unserved"]
    assert list(pipeline.streams) == ["imu"] and pipeline.frames == -(-len(audio) // 1280)


class FailsOnce(Source):
    """A source that runs until stopped and whose first run dies, as a device that vanished."""

    name, finite = "flaky", False

    def __init__(self):
        self.runs = 0

    def run(self, emit, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise OSError("device gone")
        stop.wait()


def test_a_source_that_dies_is_counted_and_started_again(tmp_path):
    overrides = {"models": ["commands"], "sources": [f"pull:ipc://{tmp_path}/in"], "publish": f"ipc://{tmp_path}/ev"}
    service = Service(load_config(None, overrides))
    source = FailsOnce()
    thread = threading.Thread(target=service._run_source, args=(source,))
    thread.start()
    deadline = time.monotonic() + 10
    while source.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    service._stop.set()
    thread.join(timeout=5)
    service.close()
    handed = service.inputs.take(timeout=0, budget=float("inf"))
    states = [m.state for m in handed if isinstance(m, SourceState)]
    assert source.runs == 2 and service.problems == {"source_failures": 1}
    assert states == ["restarting: OSError: device gone", "running", "ended"]


def test_captures_hold_no_audio_of_streams_no_model_serves(tmp_path):
    """The capture buffer keeps a stream's audio only while a model scores it (which lets it go):
    an audio stream no model takes would otherwise be kept whole (about 225 MB an hour)."""
    config = load_config(None, {"models": ["motions"], "sources": [str(DEMO)], "capture.dir": str(tmp_path)})
    capture = Capturer(config.capture, lambda counter, message: None)
    pipeline = Pipeline([load_slot(config, config.models[0], 0)], lambda e: e, lambda c, m: None, 0.0, capture)
    audio, rate = read_native(DEMO)
    pipeline.feed(Samples("talk", audio, rate))
    pipeline.run_models()
    capture.close()
    assert "talk" in pipeline.streams and "talk" not in capture._recent
