"""`streamrnn demo`: the service on the bundled examples, with a subscriber beside it.

Five streams at real time: `demo` (real speech: commands and digits), `wake` and `wake_ha` (the four
wake phrases spoken by an MBROLA voice, an engine the wake-word models never heard), and two real sensor
recordings pushed over ZeroMQ ingest as remote sensors would: `wrist` (a smart watch's IMU) and
`wand` (a hand-held accelerometer drawing gestures). Every bundled model serves the streams of
its kind (and channel count).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import soundfile

from streamrnn.client import Subscription
from streamrnn.dev.harness import ServeProcess
from streamrnn.send import send
from streamrnn.wire import DetectionEvent

SAMPLES = Path(__file__).parents[1] / "samples"
AUDIO = (SAMPLES / "demo.flac", SAMPLES / "wake.flac", SAMPLES / "wake_ha.flac")
SENSORS = ((SAMPLES / "wrist.csv", 10.0, "wrist"), (SAMPLES / "wand.csv", 25.0, "wand"))  # file, Hz, stream
MODELS = ("commands", "digits", "computer", "jarvis", "hey_jarvis", "okay_nabu", "motions", "wand")
SPOKEN = (
    "yes, no, up, down, left, stop, go, three, seven; then computer, jarvis; hey jarvis, okay nabu; "
    "a wrist running, then walking; a wand drawing a ring, then a wing"
)


def demo() -> int:
    """Serve the samples at real time over ipc://, print each detection as it arrives."""
    with tempfile.TemporaryDirectory(prefix="streamrnn-demo-") as folder:
        events, ingest = f"ipc://{folder}/events", f"ipc://{folder}/ingest"
        args = ["--publish", events, "--wait-subscriber", "10", "--log-level", "warning", "--source", f"pull:{ingest}"]
        for source in AUDIO:
            args += ["--source", str(source)]
        for model in MODELS:
            args += ["--model", model]
        print(
            f"streamrnn demo: serving {', '.join(p.name for p in AUDIO)}, "
            f"{' and '.join(p.name for p, _, _ in SENSORS)} (over ingest) at real time with models "
            f"{', '.join(MODELS)} ({SPOKEN})",
            flush=True,
        )
        subscription = Subscription(events, ("detection", "status"))
        service = ServeProcess(folder, args, log_to_terminal=True)
        senders = [
            threading.Thread(target=send, args=(str(path), ingest, stream), kwargs={"rate": rate}, daemon=True)
            for path, rate, stream in SENSORS
        ]
        for sender in senders:
            sender.start()
        # the ingest source runs until stopped: stop the service once every sample has been heard
        seconds = max(
            [soundfile.info(str(p)).duration for p in AUDIO]
            + [len(path.read_text().splitlines()) / rate for path, rate, _ in SENSORS]
        )
        stop_at = time.monotonic() + seconds + 3.0
        detections = 0
        try:
            while service.process.poll() is None:
                if time.monotonic() > stop_at and not any(sender.is_alive() for sender in senders):
                    service.process.terminate()
                    stop_at = float("inf")
                event = subscription.receive(timeout=0.2)
                if event is None:
                    continue
                if isinstance(event, DetectionEvent):
                    detections += 1
                    print(
                        f"{(event.time or '')[11:23]}  {event.stream:<7} {event.model:<10} {event.label:<10} "
                        f"score {event.score:.2f}  stream time {event.start:.2f}-{event.end:.2f} s",
                        flush=True,
                    )
        finally:
            subscription.close()
            code, _ = service.stop()
            service.close()
    print(f"streamrnn demo: {detections} detection(s); service exited with status {code}")
    return code
