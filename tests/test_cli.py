"""The `streamrnn` command, run as a real subprocess."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import (
    CLIPS,
    DATA_ROOT,
    DEMO,
    EVENT_SCHEMA,
    ROOT,
    STREAMRNN,
    assert_demo_words,
    export_test_model,
    needs_data,
)
from streamrnn.catalog import resolve_model
from streamrnn.runtime import StreamingModel
from streamrnn.wire import parse_event


def run(*args, env=None, check=True):
    done = subprocess.run(
        STREAMRNN + list(map(str, args)), capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    import streamrnn

    assert (
        run("--version").stdout.strip() == f"streamrnn {version('streamrnn')}" == f"streamrnn {streamrnn.__version__}"
    )


def test_detect_finds_the_words_of_the_bundled_demo():
    lines = [json.loads(line) for line in run("detect", "--model", "commands", DEMO).stdout.splitlines()]
    for line in lines:
        EVENT_SCHEMA.validate(line)
    events = [parse_event(line) for line in lines]
    assert [e.seq for e in events] == list(range(len(events)))
    assert_demo_words(events)


def test_detect_scores_prints_every_frame():
    lines = run("detect", "--model", "commands", "--scores", DEMO).stdout.splitlines()
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    info = StreamingModel(resolve_model("commands")).info
    assert first["frame"] == 0 and first["end"] == info.frame_seconds
    samples = sf.info(DEMO).frames
    # every frame, the tail padded to a whole chunk
    assert len(lines) == -(-samples // info.chunk) * (info.chunk // info.frame_hop)
    assert abs(sum(last["scores"].values()) - 1) < 1e-3


def test_detect_runs_every_model_given_on_audio_and_sensor_files():
    lines = run("detect", "--model", "commands", "--model", "digits", DEMO).stdout.splitlines()
    events = [parse_event(json.loads(line)) for line in lines]
    assert {e.model for e in events} == {"commands", "digits"}
    assert {"three", "seven"} <= {e.label for e in events if e.model == "digits"}
    wrist = ROOT / "streamrnn" / "samples" / "wrist.csv"
    sensor = [json.loads(line) for line in run("detect", "--model", "motions", wrist).stdout.splitlines()]
    assert sensor and {e["model"] for e in sensor} == {"motions"}
    scores = run("detect", "--model", "motions", "--scores", wrist).stdout.splitlines()
    assert len(scores) == len(wrist.read_text().splitlines()) - 1  # a frame per row (a header row)
    assert all(len(str(v)) <= 7 for v in json.loads(scores[0])["scores"].values())  # 5 decimals, not float32 noise
    wand = ROOT / "streamrnn" / "samples" / "wand.csv"  # 3 channels; wrist.csv has 6: each goes to its model
    routed = run("detect", "--model", "motions", "--model", "wand", "--model", "commands", wrist, wand, DEMO)
    pairs = {(e["model"], Path(e["stream"]).name) for e in map(json.loads, routed.stdout.splitlines())}
    assert pairs == {("motions", "wrist.csv"), ("wand", "wand.csv"), ("commands", "demo.flac")}
    nobody = run("detect", "--model", "motions", "--model", "wand", DEMO, check=False)
    assert (
        nobody.returncode == 1
        and nobody.stderr.strip() == f"streamrnn: error: {DEMO}: none of the models motions, wand takes it"
    )


def test_output_into_a_closed_pipe_ends_quietly():
    done = subprocess.run(
        " ".join(map(str, STREAMRNN + ["detect", "--model", "commands", "--scores", DEMO])) + " | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.count("\n") == 1 and done.stderr == "", done.stderr


def test_models_lists_bundled_and_installed(tmp_path):
    export_test_model(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"nope")
    env = dict(os.environ, STREAMRNN_MODEL_PATH=str(tmp_path))
    done = run("models", "--json", env=env)
    listed = {m["name"]: m for m in json.loads(done.stdout)}
    assert listed["commands"]["origin"] == "bundled"
    assert "yes" in listed["commands"]["labels"] and listed["commands"]["thresholds"]
    assert listed["test_gru_audio"]["origin"] == "path"
    assert "junk.onnx: not a loadable ONNX model" in done.stderr
    table = run("models", env=env).stdout.splitlines()
    assert any(line.startswith("test_gru_audio ") for line in table)
    assert len({line.index("[") for line in table}) == 1  # the columns line up


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["detect", "--model", "/no/such.onnx", CLIPS / "yes_422d3197_nohash_0.flac"],
            "/no/such.onnx: no such model file",
        ),
        (["detect", "--model", "nosuchmodel", CLIPS / "yes_422d3197_nohash_0.flac"], "model 'nosuchmodel' not found"),
        (["detect", "--model", "commands", "/no/such.wav"], "/no/such.wav: no such file"),
        (["detect", "--model", "commands", ROOT / "streamrnn" / "samples" / "wrist.csv"], "a sensor CSV, but model"),
        (["detect", "--model", "motions", DEMO], "model motions takes sensor frames as CSV"),
        (["detect", "--model", "wand", ROOT / "streamrnn" / "samples" / "wrist.csv"], "6 columns, but model wand"),
        (["detect", "--model", "commands", "--threshold", "maybe=0.5", DEMO], "--threshold: maybe not a label"),
        (["export", "/no/such.pt"], "/no/such.pt: not a streamrnn checkpoint"),
        (
            ["eval", "--model", "commands", "CLIPS", "--detect", "--negatives", "SHORT"],
            "--negatives: a stream of 0.2 s of negative audio is too short for its",
        ),
        (["export", CLIPS / "README.md"], "README.md: not a streamrnn checkpoint"),
        (["train", "/no/such.toml"], "/no/such.toml: cannot read"),
    ],
)
def test_bad_input_gets_one_line(args, message, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    sf.write(short / "hush.wav", np.zeros(4000, np.float32), 16000)  # 0.25 s of negatives
    (tmp_path / "clips" / "yes").mkdir(parents=True)
    shutil.copy(CLIPS / "yes_422d3197_nohash_0.flac", tmp_path / "clips" / "yes")
    args = [{"SHORT": short, "CLIPS": tmp_path / "clips"}.get(a, a) if isinstance(a, str) else a for a in args]
    done = run(*args, check=False)
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_training_commands_without_the_extra_say_how_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for command in (["train", "any.toml"], ["export", "any.pt"]):
        done = run(*command, env=env, check=False)
        assert done.returncode == 1
        assert "pip install '.[train]' in the streamrnn clone" in done.stderr and done.stderr.count("\n") == 1


def test_serving_loads_only_what_a_device_runs(tmp_path):
    """A real `serve` of a file to its end, then the modules it loaded: nothing of evaluation/,
    dev/, training or deploy (nor torch), which a recognizing device need not have."""
    code = (
        "import sys\n"
        "from streamrnn.cli import main\n"
        "try:\n"
        f"    main(['serve', '--fast', '--model', 'commands', '--source', {str(DEMO)!r}, "
        f"'--publish', 'ipc://{tmp_path}/events', '--log-level', 'warning'])\n"
        "except SystemExit as end:\n"
        "    print(end.code, sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.split('.')[:2] in "
        "(['streamrnn', 'evaluation'], ['streamrnn', 'dev'], ['streamrnn', 'training'], ['streamrnn', 'deploy'])))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    # the check can fail: the evaluation code a developer's command loads shows up in the list
    code = "import streamrnn.evaluation.detection\n" + code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "'streamrnn.evaluation.detection'" in done.stdout.strip().splitlines()[-1]


def test_streaming_never_imports_torch():
    code = (
        "import sys; from streamrnn.cli import main; "
        f"rc = main(['detect', '--model', 'commands', {str(DEMO)!r}]); "
        "assert rc == 0; main(['models']); "
        f"assert main(['eval', '--model', 'motions', {str(CLIPS / 'motions')!r}, '--json']) == 0; "
        "print('TORCH' if 'torch' in sys.modules else 'CLEAN')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "CLEAN"
    assert '"kind": "detection"' in done.stdout


@needs_data
def test_eval_on_a_recipe_needs_no_training_extra():
    """`streamrnn eval --recipe` reads a recipe's settings and split on a runtime install: with torch and
    tqdm (the training extra) unimportable it still runs."""
    code = (
        "import sys; sys.modules['torch'] = sys.modules['tqdm'] = None; from streamrnn.cli import main; "
        "main(['eval', '--model', 'wand', '--recipe', 'training/recipes/wand.toml', '--split', 'test', "
        f"'--data-root', {str(DATA_ROOT)!r}, '--json'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] > 0.9


def test_the_wheel_holds_every_package_of_the_tree(tmp_path):
    """What `pip install .` installs, not the editable checkout: every folder with an
    __init__.py (and the bundled models and samples) is in the built wheel. Built from a copy
    without the checkout's build/ folder, whose stale copies of moved modules would fill gaps."""
    import shutil
    import zipfile

    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", "build", "runs", "*.egg-info", ".git"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("streamrnn-*.whl"))).namelist()
    where = {"streamrnn": "streamrnn", "training": "streamrnn/training", "deploy": "streamrnn/deploy"}
    for top, installed in where.items():
        for init in (ROOT / top).rglob("__init__.py"):
            package = init.parent.relative_to(ROOT / top).as_posix()
            assert f"{installed}/{package}/__init__.py".replace("/./", "/") in names, package
    assert "streamrnn/service/sources/ingest.py" in names and "streamrnn/models/commands.onnx" in names
    assert "streamrnn/samples/demo.flac" in names and "streamrnn/training/recipes/wakeword.toml.in" in names
    assert "streamrnn/training/encoders/student.pt" in names
