"""Reviewing captures (`streamrnn review`): a real service captures the demo's detections, then
the terminal prompt (playing each clip on a null ALSA device) and the HTML page (over real HTTP)
move them into positive/ and negative/."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import urllib.parse

import soundfile as sf

from conftest import DEMO, ROOT, STREAMRNN, free_tcp_address
from streamrnn.runtime import StreamingModel


def capture_demo(service, folder, *args) -> list[str]:
    """Capture the demo's detections of `commands` in `folder`; their file names, oldest first."""
    code, log = service("--model", "commands", "--source", DEMO, "--fast", "--capture-dir", folder, *args).finish()
    assert code == 0, log
    names = sorted(p.stem for p in folder.glob("*.json"))
    assert len(names) >= 5
    return names


def test_the_prompt_plays_each_clip_and_moves_it_by_the_answer(service, tmp_path):
    folder = tmp_path / "captures"
    names = capture_demo(service, folder)
    (folder / "broken.json").write_text("{not json")  # named, left alone, the rest reviewed
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("pcm.!default { type null }\n")  # a sound output that plays silently
    answers = "y\nwhat\nn\nr\ny\ns\nq\n"  # yes; a wrong answer asked again, then no; replay, yes; skip; quit
    done = subprocess.run(
        STREAMRNN + ["review", str(folder)],
        input=answers,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HOME=str(home)),
    )
    assert done.returncode == 0, done.stderr
    assert "no sound output" not in done.stderr  # every clip played
    assert f"{folder / 'broken.json'}: not a capture's event" in done.stderr
    assert "'what': answer y, n, r, s or q" in done.stdout
    assert "2 positive, 1 negative, 1 skipped; " + f"{len(names) - 3} left" in done.stdout
    for name, verdict in zip(names, ["positive", "negative", "positive"]):
        moved = list((folder / verdict).glob(f"*/{name}.flac"))
        assert len(moved) == 1 and moved[0].with_suffix(".json").is_file(), (name, verdict)
        label = json.loads(moved[0].with_suffix(".json").read_text())["label"]
        assert moved[0].parent.name == label and sf.info(str(moved[0])).duration > 1.5
    assert all((folder / f"{n}.flac").is_file() for n in names[3:])  # skipped and unanswered stay


def test_without_a_sound_device_the_prompt_says_so_and_still_asks(service, tmp_path):
    folder = tmp_path / "captures"
    names = capture_demo(service, folder)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("pcm.!default { type hw card 9 }\n")  # a card that is not there
    done = subprocess.run(
        STREAMRNN + ["review", str(folder)],
        input="n\n",  # then the end of input: quit
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, HOME=str(home)),
    )
    assert done.returncode == 0, done.stderr
    assert "no sound output" in done.stderr and "--html serves them to a browser" in done.stderr
    assert list((folder / "negative").glob(f"*/{names[0]}.flac"))


def request(address: str, method: str, path: str, form: dict | None = None) -> tuple[int, dict, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = urllib.parse.urlencode(form).encode() if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_the_page_plays_each_capture_and_its_buttons_move_them(service, tmp_path):
    folder = tmp_path / "captures"
    config = tmp_path / "c.toml"
    config.write_text("[capture]\nnear_misses = true\n")
    names = capture_demo(service, folder, "--config", config, "--threshold", "yes=1.0")  # "yes": a near miss
    names += sorted(f"near-misses/{p.stem}" for p in folder.glob("near-misses/*.json"))
    near_yes = [n for n in names if n.startswith("near-misses/") and n.endswith("_yes_near")]
    assert len(near_yes) == 1, names
    address = free_tcp_address().removeprefix("tcp://")
    command = STREAMRNN + ["review", str(folder), "--html", address]
    page = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert page.stdout is not None and f"http://{address}/" in page.stdout.readline()
        code, _, body = request(address, "GET", "/")
        text = body.decode()
        assert code == 200 and f"{len(names)} captures left ({len(names) - 1} detections, 1 near misses)" in text
        yes = StreamingModel(ROOT / "streamrnn" / "models" / "commands.onnx").info.thresholds["yes"]
        assert text.count(" in the model) in stream") == len(names)  # each score beside its threshold
        assert f"threshold {yes:g} in the model" in text
        assert 'if (e.key === "y")' in text and "Keys: y holds it" in text
        sources = re.findall(r'<audio controls preload="none" src="([^"]+)">', text)
        assert sources == [f"/audio/{n}.flac" for n in sorted(names, key=lambda n: n.split("/")[-1])]  # oldest first
        key = sources[1].removeprefix("/audio/").removesuffix(".flac")
        code, headers, flac = request(address, "GET", sources[1])
        assert code == 200 and headers["Content-Type"] == "audio/flac"
        assert flac == (folder / f"{key}.flac").read_bytes()
        token = re.search(r'name="token" value="([^"]+)"', text)
        assert token
        code, _, _ = request(address, "POST", "/mark", {"capture": key, "verdict": "negative", "token": "x"})
        assert code == 403 and (folder / f"{key}.flac").is_file()  # a form from elsewhere moves nothing
        code, _, _ = request(address, "POST", "/mark", {"capture": "../x", "verdict": "negative", "token": token[1]})
        assert code == 400
        code, headers, _ = request(address, "POST", "/mark", {"capture": key, "verdict": "negative", "token": token[1]})
        assert code == 303 and headers["Location"] == "/"
        assert list((folder / "negative").glob(f"*/{key}.flac"))
        assert request(address, "GET", sources[1])[0] == 404  # reviewed: no longer on the page
        after = request(address, "GET", "/")[2].decode()
        assert f"{len(names) - 1} captures left" in after and "Last: negative/" in after  # and its undo
        assert request(address, "POST", "/undo", {"token": token[1]})[0] == 303
        assert (folder / f"{key}.flac").is_file() and (folder / f"{key}.json").is_file()  # back for review
        assert f"{len(names)} captures left" in request(address, "GET", "/")[2].decode()
        assert request(address, "POST", "/undo", {"token": token[1]})[0] == 400  # nothing more to undo
        assert request(address, "POST", "/mark", {"capture": key, "verdict": "negative", "token": token[1]})[0] == 303
        near = {"capture": near_yes[0], "verdict": "positive", "token": token[1]}
        assert request(address, "POST", "/mark", near)[0] == 303  # a near miss that was the word: a miss
        assert list((folder / "positive" / "yes").glob(f"{near_yes[0].removeprefix('near-misses/')}.flac"))
        assert page.stdout.readline().startswith(f"{key}: negative")
        assert page.stdout.readline().startswith(f"{key}: back to review")
        assert page.stdout.readline().startswith(f"{key}: negative")
        assert page.stdout.readline().startswith(f"{near_yes[0]}: positive")
    finally:
        page.terminate()
        page.wait(timeout=10)


def test_a_page_others_can_reach_needs_insecure_and_a_missing_folder_is_named(tmp_path):
    review = STREAMRNN + ["review"]
    done = subprocess.run(review + [str(tmp_path), "--html", "0.0.0.0:8765"], capture_output=True, text=True)
    assert done.returncode == 1 and "reachable from other machines" in done.stderr and "--insecure" in done.stderr
    done = subprocess.run(review + [str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert done.stderr.strip() == f"streamrnn: error: review {tmp_path / 'nowhere'}: not a folder"
    assert done.returncode == 1
    done = subprocess.run(review + [str(tmp_path), "--html", "8765"], capture_output=True, text=True)
    assert done.stderr.strip() == "streamrnn: error: --html '8765' is not HOST:PORT (e.g. 127.0.0.1:8765)"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(review + [str(tmp_path), "--html", address], capture_output=True, text=True)
    assert done.returncode == 1 and f"--html {address}: cannot serve (Address already in use)" in done.stderr


def test_the_page_refuses_other_hosts_other_origins_links_and_broken_requests(tmp_path):
    """A request naming a DNS host (DNS rebinding) or posting from another site's page is refused;
    a capture planted as a symbolic link to a file elsewhere is left alone, not served; a broken
    Content-Length is answered 400, not a dropped connection."""
    folder = tmp_path / "captures"
    folder.mkdir()
    secret = tmp_path / "secret.flac"
    secret.write_bytes(b"not for the page")
    (folder / "t_s_yes_1.flac").symlink_to(secret)
    (folder / "t_s_yes_1.json").write_text('{"label": "yes", "model": "commands", "score": 0.9}')
    address = free_tcp_address().removeprefix("tcp://")
    page = subprocess.Popen(
        STREAMRNN + ["review", str(folder), "--html", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    host, port = address.rsplit(":", 1)
    try:
        assert page.stdout is not None and f"http://{address}/" in page.stdout.readline()

        def ask(method, path, headers, body=b""):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.putrequest(method, path, skip_host=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read()

        assert ask("GET", "/", {"Host": "evil.example:" + port})[0] == 403
        assert ask("GET", "/", {"Host": "localhost:" + port})[0] == 200
        status, body = ask("GET", "/", {"Host": address})
        assert status == 200 and b"No captures to review" in body  # the link is not a capture
        assert ask("GET", "/audio/t_s_yes_1.flac", {"Host": address})[0] == 404
        form = {"Host": address, "Origin": "http://evil.example", "Content-Length": "9"}
        assert ask("POST", "/mark", form, b"token=x&a")[0] == 403
        assert ask("POST", "/mark", {"Host": address, "Content-Length": "nine"})[0] == 400
    finally:
        page.terminate()
        _, err = page.communicate(timeout=10)
    assert "a symbolic link; left as it is" in err and "Traceback" not in err
