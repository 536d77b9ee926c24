"""`streamrnn review DIR`: say of each capture in DIR (detections and near misses the service
kept, see service/capture.py) whether it holds its label's phrase. Each moves, FLAC and JSON,
into DIR/positive/LABEL/ or DIR/negative/LABEL/: the folders `train-wakeword --recordings` and
`--negatives` take. In a terminal each clip plays on the sound device where there is one;
`--html` serves a page with audio players instead, for a box without speakers."""

from __future__ import annotations

import functools
import html
import ipaddress
import json
import secrets
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile

from streamrnn.addresses import host_port, is_loopback
from streamrnn.captures import NEAR_MISSES, safe_name

VERDICTS = ("positive", "negative")
MAX_FORM_BYTES = 4096


class ReviewError(ValueError):
    """A folder or address review cannot use; the message names it."""


@dataclass(frozen=True)
class Capture:
    base: Path  # the capture's path without .flac / .json
    key: str  # that path under the capture folder: how the page names it
    event: dict

    @property
    def near_miss(self) -> bool:
        return self.base.parent.name == NEAR_MISSES

    @property
    def label(self) -> str:
        return self.event["label"]  # a string: `pending` checked it

    def describe(self) -> str:
        e = self.event
        what = "near miss" if self.near_miss else "detection"
        threshold = model_threshold(e.get("model"), self.label)
        against = f", threshold {threshold:g} in the model" if threshold is not None else ""
        return (
            f"{what} of {self.label!r} by {e.get('model')} (score {e.get('score')}{against}) in stream "
            f"{e.get('stream')!r} at {e.get('start')}-{e.get('end')} s, {e.get('time')}"
        )


@functools.cache
def model_threshold(model: object, label: str) -> float | None:
    """The threshold a model's file gives a label (a service may have overridden it), or None
    where the model is not installed here."""
    from streamrnn.catalog import resolve_model
    from streamrnn.contract import ContractError
    from streamrnn.runtime import open_contract

    try:
        return open_contract(resolve_model(str(model)))[1].thresholds.get(label)
    except (ContractError, OSError):
        return None


def pending(folder: Path, problem: Callable[[str], None]) -> list[Capture]:
    """The captures in `folder` and its near-misses/ not yet reviewed, oldest first; a JSON file
    that cannot be read or has no FLAC beside it is reported through `problem` and left out."""
    captures = []
    for path in sorted([*folder.glob("*.json"), *folder.glob(f"{NEAR_MISSES}/*.json")], key=lambda p: p.name):
        if any(p.is_symlink() for p in (path, path.with_suffix(".flac"), path.parent)):
            problem(f"{path}: a symbolic link; left as it is (review serves only the files in its folder)")
            continue
        try:
            event = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem(f"{path}: not a capture's event ({exc}); left as it is")
            continue
        if not isinstance(event, dict) or not isinstance(event.get("label"), str):
            problem(f"{path}: not a capture's event (no label); left as it is")
        elif not path.with_suffix(".flac").is_file():
            problem(f"{path}: no {path.with_suffix('.flac').name} beside it; left as it is")
        else:
            captures.append(Capture(path.with_suffix(""), path.with_suffix("").relative_to(folder).as_posix(), event))
    return captures


def mark(capture: Capture, folder: Path, verdict: str) -> Path:
    """Move a capture into folder/VERDICT/LABEL/ and return its new path (without suffix)."""
    target = folder / verdict / safe_name(capture.label)
    target.mkdir(parents=True, exist_ok=True)
    for suffix in (".flac", ".json"):
        shutil.move(capture.base.with_suffix(suffix), target / (capture.base.name + suffix))
    return target / capture.base.name


def capture_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ReviewError(f"review {path}: not a folder")
    return folder


def _warn(message: str) -> None:
    print(f"streamrnn: warning: {message}", file=sys.stderr, flush=True)


# ----- in a terminal ------------------------------------------------------------------------


class Player:
    """Plays clips on the default sound output, or says once why it cannot."""

    def __init__(self):
        self.problem = ""
        try:
            import sounddevice

            sounddevice.check_output_settings()
            self._device = sounddevice
        except Exception as exc:  # no PortAudio library (OSError), no output device (PortAudioError)
            self.problem = f"no sound output ({exc}): clips are not played; --html serves them to a browser"

    def play(self, base: Path) -> None:
        if self.problem:
            return
        audio, rate = soundfile.read(str(base.with_suffix(".flac")), dtype="float32")
        try:
            self._device.play(np.asarray(audio), rate, blocking=True)
        except Exception as exc:  # the device went away (PortAudioError)
            self.problem = f"sound output failed ({exc}): clips are no longer played"
            _warn(self.problem)


ANSWERS = {"y": "positive", "yes": "positive", "n": "negative", "no": "negative"}


def review_in_terminal(path: str) -> Counter:
    """Ask about each pending capture on stdin; returns how many went where."""
    folder = capture_folder(path)
    captures = pending(folder, _warn)
    done: Counter = Counter()
    if not captures:
        print(f"{folder}: no captures to review")
        return done
    player = Player()
    if player.problem:
        _warn(player.problem)
    for number, capture in enumerate(captures, 1):
        print(f"[{number}/{len(captures)}] {capture.describe()}", flush=True)
        answer = "r"
        while answer in ("r", "replay", ""):
            if answer:
                player.play(capture.base)
            try:
                answer = input(f"  does it hold {capture.label!r}? [y]es [n]o [r]eplay [s]kip [q]uit: ").strip().lower()
            except EOFError:
                answer = "q"
            if answer not in ("r", "replay", "", "s", "skip", "q", "quit", *ANSWERS):
                print(f"  {answer!r}: answer y, n, r, s or q")
                answer = ""
        if answer in ("q", "quit"):
            break
        if answer in ANSWERS:
            verdict = ANSWERS[answer]
            mark(capture, folder, verdict)
            done[verdict] += 1
        else:
            done["skipped"] += 1
    left = len(pending(folder, lambda _: None))
    print(f"{done['positive']} positive, {done['negative']} negative, {done['skipped']} skipped; {left} left")
    return done


# ----- in a browser -------------------------------------------------------------------------


def serve_page(path: str, address: str, insecure: bool = False) -> None:
    """Serve the review page on HOST:PORT until interrupted."""
    folder = capture_folder(path)
    host, port = host_port(address, "--html", "127.0.0.1:8765")
    if not insecure and not is_loopback(f"tcp://{host}:{port}"):
        raise ReviewError(f"--html {address} is reachable from other machines and the page has no login: --insecure")
    token = secrets.token_urlsafe(16)  # only forms this page served can move captures
    moves: list[tuple[Path, Path]] = []  # (where a capture was, where it went), the last last: for undo

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a client may take over its request: slow ones do not hold the server

        def _foreign(self) -> bool:
            """A request that names a host by a DNS name, or a form from a page of one (DNS
            rebinding: another site's name pointed at this address): refused with 403. The page
            answers to an IP address or localhost only."""
            named = urlsplit(f"//{self.headers.get('Host', '')}").hostname
            origin = self.headers.get("Origin")
            if not _own(named) or (origin is not None and not _own(urlsplit(origin).hostname)):
                self._send(403, "text/plain", b"this page answers requests for its own address only\n")
                return True
            return False

        def do_GET(self) -> None:
            if self._foreign():
                return
            captures = pending(folder, _warn)
            if self.path == "/":
                last = moves[-1][1].relative_to(folder).as_posix() if moves else ""
                self._send(200, "text/html; charset=utf-8", _page(captures, token, last).encode())
            elif self.path.startswith("/audio/") and self.path.endswith(".flac"):
                found = [c for c in captures if c.key == self.path[len("/audio/") : -len(".flac")]]
                if found:
                    self._send(200, "audio/flac", found[0].base.with_suffix(".flac").read_bytes())
                else:
                    self._send(404, "text/plain", b"no such capture\n")
            else:
                self._send(404, "text/plain", b"not found\n")

        def do_POST(self) -> None:
            if self._foreign():
                return
            length = int(value) if (value := self.headers.get("Content-Length", "0")).isdigit() else -1
            if self.path not in ("/mark", "/undo") or not 0 < length <= MAX_FORM_BYTES:
                self._send(400, "text/plain", b"expected a form posted to /mark or /undo\n")
                return
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if form.get("token", [""])[0] != token:
                self._send(403, "text/plain", b"this form is not from this page: reload it\n")
                return
            if self.path == "/undo":
                if not moves:
                    self._send(400, "text/plain", b"nothing to undo\n")
                    return
                was, went = moves.pop()
                for suffix in (".flac", ".json"):
                    shutil.move(went.with_suffix(suffix), was.with_suffix(suffix))
                print(f"{was.relative_to(folder).as_posix()}: back to review", flush=True)
            else:
                key, verdict = form.get("capture", [""])[0], form.get("verdict", [""])[0]
                found = [c for c in pending(folder, _warn) if c.key == key]
                if not found or verdict not in VERDICTS:
                    self._send(400, "text/plain", b"no such capture or verdict\n")
                    return
                moved = mark(found[0], folder, verdict)
                moves.append((found[0].base, moved))
                print(f"{key}: {verdict} ({moved.parent})", flush=True)
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass  # each mark is printed; requests are not

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ReviewError(f"--html {address}: cannot serve ({exc.strerror})") from None
    print(f"review page: http://{address}/ (Ctrl-C to stop)", flush=True)
    with server:
        server.serve_forever()


KEYS = """<script>
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  const first = document.querySelector("li");
  const press = (selector) => { const b = document.querySelector(selector); if (b) b.click(); };
  if (e.key === "y") press("li button[value=positive]");
  else if (e.key === "n") press("li button[value=negative]");
  else if (e.key === "u") press("#undo button");
  else if ((e.key === "p" || e.key === " ") && first) { e.preventDefault(); const a = first.querySelector("audio");
    if (a.paused) { a.currentTime = 0; a.play(); } else a.pause(); }
});
window.addEventListener("load", () => {
  const a = document.querySelector("li audio"); if (a) a.play().catch(() => {});
});
</script>"""


def _own(name: str | None) -> bool:
    """Whether a host name in a request is an address, not a DNS name someone could point here."""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name or "")
        return True
    except ValueError:
        return False


def _page(captures: list[Capture], token: str, last: str = "") -> str:
    """The page: what is left, oldest first, each with a player and its two buttons; an undo of
    the last move; keys y, n (the first capture), p or space (play it again), u (undo)."""
    rows = []
    for c in captures:
        key, label = html.escape(c.key, quote=True), html.escape(c.label)
        rows.append(
            f"<li><p>{html.escape(c.describe())}</p>"
            f'<audio controls preload="none" src="/audio/{key}.flac"></audio>'
            f'<form method="post" action="/mark"><input type="hidden" name="capture" value="{key}">'
            f'<input type="hidden" name="token" value="{token}">'
            f'<button name="verdict" value="positive">holds &ldquo;{label}&rdquo;</button> '
            f'<button name="verdict" value="negative">does not</button></form></li>'
        )
    body = "<ol>" + "".join(rows) + "</ol>" if rows else "<p>No captures to review.</p>"
    near = sum(c.near_miss for c in captures)
    undo = (
        f'<form id="undo" method="post" action="/undo"><input type="hidden" name="token" value="{token}">'
        f"Last: {html.escape(last)} <button>undo</button></form>"
        if last
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>streamrnn review</title></head><body>'
        f"<h1>streamrnn review: {len(captures)} captures left "
        f"({len(captures) - near} detections, {near} near misses)</h1>"
        f"<p>Keys: y holds it, n does not (the first capture below), p or space plays it, u undoes.</p>"
        f"{undo}{body}{KEYS}</body></html>"
    )
