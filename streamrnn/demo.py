"""`streamrnn demo`: the service on the bundled example recording, with a subscriber beside it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .client import Subscription

SAMPLE = Path(__file__).parent / "samples" / "demo.flac"
MODELS = ("commands", "digits")


def demo() -> int:
    """Serve the sample at real time over ipc://, print each detection as it arrives."""
    with tempfile.TemporaryDirectory(prefix="streamrnn-demo-") as folder:
        address = f"ipc://{folder}/events"
        command = [sys.executable, "-m", "streamrnn.cli", "serve", "--source", str(SAMPLE),
                   "--publish", address, "--wait-subscriber", "10", "--log-level", "warning"]
        for model in MODELS:
            command += ["--model", model]
        print(f"streamrnn demo: serving {SAMPLE.name} (spoken: yes, no, up, down, left, stop, go, three, seven) "
              f"at real time with model(s) {', '.join(MODELS)}", flush=True)
        subscription = Subscription(address, ("detection", "status"))
        service = subprocess.Popen(command)
        detections = 0
        try:
            while service.poll() is None:
                event = subscription.receive(timeout=0.2)
                if event is None:
                    continue
                if event["kind"] == "detection":
                    detections += 1
                    print(f"{event['time'][11:23]}  {event['model']:<10} {event['label']:<8} "
                          f"score {event['score']:.2f}  stream time {event['start']:.2f}-{event['end']:.2f} s",
                          flush=True)
                elif event.get("state") == "stopping":
                    break
        finally:
            subscription.close()
            code = service.wait(timeout=10)
    print(f"streamrnn demo: {detections} detection(s); service exited with status {code}")
    return code
