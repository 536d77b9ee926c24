"""`streamrnn demo`: the service on the bundled examples, with a subscriber beside it.

Three streams at real time: `demo` (real speech: commands and digits), `wake` (the two wake
phrases spoken by festival, an engine the wake-word models never heard) and `wrist` (a real
smart-watch IMU recording, pushed over ZeroMQ ingest as a remote sensor would). Every bundled
model serves the streams of its kind.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile

from .client import Subscription
from .send import send

SAMPLES = Path(__file__).parent / "samples"
AUDIO = (SAMPLES / "demo.flac", SAMPLES / "wake.flac")
SENSOR, SENSOR_RATE = SAMPLES / "wrist.csv", 10.0
MODELS = ("commands", "digits", "computer", "jarvis", "motions")
SPOKEN = ("yes, no, up, down, left, stop, go, three, seven; then computer, jarvis; "
          "and a wrist running, then walking")


def demo() -> int:
    """Serve the samples at real time over ipc://, print each detection as it arrives."""
    with tempfile.TemporaryDirectory(prefix="streamrnn-demo-") as folder:
        events, ingest = f"ipc://{folder}/events", f"ipc://{folder}/ingest"
        command = [sys.executable, "-m", "streamrnn.cli", "serve", "--publish", events, "--wait-subscriber", "10",
                   "--log-level", "warning", "--source", f"pull:{ingest}"]
        for source in AUDIO:
            command += ["--source", str(source)]
        for model in MODELS:
            command += ["--model", model]
        print(f"streamrnn demo: serving {', '.join(p.name for p in AUDIO)} and {SENSOR.name} (ingest) at real time "
              f"with models {', '.join(MODELS)} (spoken: {SPOKEN})", flush=True)
        subscription = Subscription(events, ("detection", "status"))
        service = subprocess.Popen(command)
        sender = threading.Thread(target=send, args=(str(SENSOR), ingest, "wrist"), kwargs={"rate": SENSOR_RATE},
                                  daemon=True)
        sender.start()
        # the ingest source runs until stopped: stop the service once every sample has been heard
        seconds = max(soundfile.info(str(p)).duration for p in AUDIO)
        stop_at = time.monotonic() + max(seconds, len(SENSOR.read_text().splitlines()) / SENSOR_RATE) + 3.0
        detections = 0
        try:
            while service.poll() is None:
                if time.monotonic() > stop_at and not sender.is_alive():
                    service.terminate()
                    stop_at = float("inf")
                event = subscription.receive(timeout=0.2)
                if event is None:
                    continue
                if event["kind"] == "detection":
                    detections += 1
                    print(f"{event['time'][11:23]}  {event['stream']:<6} {event['model']:<9} {event['label']:<9} "
                          f"score {event['score']:.2f}  stream time {event['start']:.2f}-{event['end']:.2f} s",
                          flush=True)
        finally:
            subscription.close()
            code = service.wait(timeout=10)
    print(f"streamrnn demo: {detections} detection(s); service exited with status {code}")
    return code
