"""The `streamrnn` command: parse arguments and call the module that does the work."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import TYPE_CHECKING

from streamrnn.addresses import DEFAULT_PUBLISH
from streamrnn.contract import DEVICES, is_threshold

if TYPE_CHECKING:
    from streamrnn.service.signals import EarlySignals

TRAIN_EXTRA = "needs the training extra: pip install '.[train]' in the streamrnn clone (torch, torchaudio, onnx)"


class CommandError(Exception):
    """A failure to report as one line and exit 1."""


def _need_training(command: str) -> None:
    try:
        for name in ("torch", "torchaudio", "onnx"):
            importlib.import_module(name)
    except ImportError:
        raise CommandError(f"streamrnn {command} {TRAIN_EXTRA}") from None


def _threshold(text: str) -> tuple[str, float]:
    label, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not sep or not label or not is_threshold(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=VALUE with VALUE in [0, 1]")
    return label, number


def cmd_train(args) -> None:
    _need_training("train")
    from streamrnn.deploy.release import train_and_release
    from streamrnn.recipe.schema import load_recipe

    train_and_release(load_recipe(args.recipe, args.data_root), args.resume)


def cmd_distill(args) -> None:
    _need_training("distill")
    from streamrnn.training.distill import distill, load_distill_recipe

    distill(load_distill_recipe(args.recipe, args.data_root))


def cmd_train_wakeword(args) -> None:
    _need_training("train-wakeword")
    from streamrnn.deploy.release import train_and_release
    from streamrnn.recipe.schema import load_recipe
    from streamrnn.training.wakeword import write_recipe

    path = write_recipe(
        args.phrases, args.recipe_out or "runs/recipes", args.name, args.recordings or [], args.negatives or []
    )
    print(f"recipe: {path}", flush=True)
    if not args.recipe_only:
        model = train_and_release(load_recipe(path, args.data_root))
        print(f"model: {model}", flush=True)
        if args.install and model:
            from streamrnn.catalog import install_model

            _print_installed(install_model(model))


def cmd_train_check(args) -> None:
    _need_training("train-check")
    from streamrnn.catalog import resolve_model
    from streamrnn.deploy.train_check import CheckSettings, train_check
    from streamrnn.recipe.schema import load_recipe

    settings = CheckSettings(frames=args.frames, fa_per_hour=args.fa_per_hour)
    recipe = load_recipe(args.recipe, args.data_root)
    train_check(recipe, resolve_model(args.model), args.out, args.label, settings, args.version)


def cmd_fetch_negatives(args) -> None:
    from pathlib import Path

    from streamrnn.evaluation.negatives import default_folder, fetch
    from streamrnn.recipe.datasets import NEGATIVE_SETS

    debs = Path(args.source) if args.source else None
    for folder in fetch(Path(args.folder) if args.folder else default_folder(), args.set, debs):
        kind = next(k for k, packages in NEGATIVE_SETS.items() if folder.name in packages)
        print(f"{kind:<5} {folder}  ({NEGATIVE_SETS[kind][folder.name]})")


def cmd_build_conversation(args) -> None:
    _need_training("build-conversation")
    from pathlib import Path

    from streamrnn.recipe.datasets import default_data_root
    from streamrnn.training import conversation

    manifest = conversation.build_from_root(
        args.avoid or conversation.BUNDLED_PHRASES,
        args.data_root or default_data_root(),
        [Path(w) for w in args.words] if args.words else None,
        dict(zip(conversation.SPLITS, args.sentences)) if args.sentences else conversation.SENTENCES,
        args.engines or conversation.ENGINES,
        Path(args.folder) if args.folder else None,
    )
    for line in conversation.summary(manifest):
        print(line)


def cmd_fetch_voices(args) -> None:
    from pathlib import Path

    from streamrnn.training.voices import KOKORO_JS, default_folder, fetch_voices, voice_names

    folder = fetch_voices(Path(args.folder) if args.folder else default_folder(), args.source or KOKORO_JS)
    print(f"{folder}  (Kokoro-82M int8 and {len(voice_names(folder))} voices of kokoro-js 1.2.1, Apache-2.0)")


def cmd_export(args) -> None:
    _need_training("export")
    from streamrnn.deploy.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.out, args.chunk))


def cmd_install_model(args) -> None:
    from streamrnn.catalog import SERVICE_MODELS, install_model

    _print_installed(install_model(args.file, SERVICE_MODELS if args.service else args.dir))


def _print_installed(path) -> None:
    from streamrnn.contract import ModelInfo
    from streamrnn.runtime import open_contract

    info: ModelInfo = open_contract(path)[1]
    print(
        f"installed {info.name} {info.version} as {path}: serve it with --model {info.name} (a running service:"
        f" add it to the config's [[models]] and reload)"
    )


def cmd_samples(args) -> None:
    from streamrnn.samples import FOLDER, samples

    for path in samples():
        print(path)
    print(f"(what each holds: {FOLDER / 'README.md'})", file=sys.stderr)


def cmd_models(args) -> None:
    from streamrnn.catalog import list_models

    models, errors = list_models()
    for line in errors:
        print(f"streamrnn: skipped {line}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"origin": origin, **info.as_dict()} for origin, info in models], indent=2))
        return
    rows = [
        (
            info.name,
            info.version,
            info.kind,
            info.cell,
            f"{len(info.labels)} labels",
            f"{info.sample_rate:g} Hz",
            f"chunk {info.chunk}",
            f"[{origin}]",
            str(info.path),
        )
        for origin, info in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)] if rows else []
    for row in rows:  # columns as wide as their widest cell; numbers to the right
        cells = [c.rjust(w) if c[0].isdigit() else c.ljust(w) for c, w in zip(row, widths)]
        print("  ".join(cells + [row[-1]]))
    if not models:
        print("no models found", file=sys.stderr)


def cmd_detect(args) -> None:
    from streamrnn.catalog import resolve_model
    from streamrnn.detect import detect_files, route, score_files
    from streamrnn.runtime import StreamingModel
    from streamrnn.wire import Stamper

    models = [StreamingModel(resolve_model(name), device=args.device) for name in args.model]
    gate = _gate(args)
    for model in models:
        if model.info.kind == "audio":
            model.set_gate(gate)
    known = {label for model in models for label in model.info.labels}
    unknown = [label for label, _ in args.threshold if label not in known]
    if unknown:
        raise CommandError(f"--threshold: {', '.join(unknown)} not a label of {', '.join(args.model)}")
    stamper = Stamper()
    for model, files in zip(models, route(models, args.files)):
        if not files:
            continue
        if args.scores:
            hop, labels = model.info.frame_seconds, model.info.labels
            for stream, scores in score_files(model, files, args.rate).items():
                for i, row in enumerate(scores.tolist()):
                    end, values = round((i + 1) * hop, 4), {x: round(v, 5) for x, v in zip(labels, row)}
                    print(
                        json.dumps(
                            {"stream": stream, "model": model.info.name, "frame": i, "end": end, "scores": values}
                        )
                    )
            continue
        thresholds = {label: v for label, v in args.threshold if label in model.info.labels}
        for event in detect_files(model, files, _decision_settings(args), thresholds, args.rate):
            print(json.dumps(stamper.stamp(event).to_dict()), flush=True)


DECISION_HELP = {  # the decision layer's settings, for the offline commands and serve alike
    "smoothing": "frames averaged (0: each model's own, from its contract file)",
    "patience": "smoothed frames at or above threshold before firing (0: each model's own)",
    "refractory": "seconds a label stays silent after firing",
}


SERVE_FLAGS = {  # flag -> (setting, type, help)
    "--publish": ("publish", str, f"event address to bind (default {DEFAULT_PUBLISH})"),
    "--instance": ("instance", str, "the name events carry as `instance` (default HOST:PID)"),
    "--metrics": ("metrics", str, "HOST:PORT to serve Prometheus metrics on (needs streamrnn[metrics])"),
    "--device": ("device", str, "cpu or cuda"),
    "--threads": ("threads", int, "onnxruntime threads per model"),
    "--log-level": ("log_level", str, "debug, info, warning or error"),
    "--heartbeat": ("heartbeat", float, "seconds between heartbeats"),
    "--status-interval": ("status_interval", float, "seconds between status events"),
    "--scores-rate": ("scores_rate", float, "scores.<stream> events per second per stream (0: off)"),
    "--send-hwm": ("send_hwm", int, "events queued per subscriber before drops"),
    "--stdin-rate": ("stdin_rate", int, "sample rate of raw PCM on stdin"),
    "--wait-subscriber": ("wait_subscriber", float, "seconds to wait for a subscriber before reading sources"),
    "--smoothing": ("decision.smoothing", int, DECISION_HELP["smoothing"]),
    "--patience": ("decision.patience", int, DECISION_HELP["patience"]),
    "--refractory": ("decision.refractory", float, DECISION_HELP["refractory"]),
    "--idle-timeout": ("ingest.idle_timeout", float, "seconds before an idle ingest stream expires"),
    "--capture-dir": ("capture.dir", str, "keep the audio around each detection there (FLAC + JSON)"),
    "--mic-rate": ("mic.rate", float, "microphone capture rate (0: the device's default)"),
    "--zeroconf": (
        "wyoming.zeroconf",
        str,
        "announce Wyoming sources over mDNS as this name (Home Assistant finds them)",
    ),
}


def _serve_overrides(args) -> dict:
    overrides = {setting: getattr(args, setting.replace(".", "_")) for setting, _, _ in SERVE_FLAGS.values()}
    overrides.update(models=args.model, sources=args.source, fast=True if args.fast else None)
    overrides.update(thresholds=dict(args.threshold) if args.threshold else None)
    return overrides


def cmd_serve(args) -> None:
    from streamrnn.service.config import config_path, load_config
    from streamrnn.service.loop import check_service, serve

    overrides = _serve_overrides(args)
    if not args.check:
        raise SystemExit(serve(args.config, overrides, args.early_signals))
    path = config_path(args.config)
    config = load_config(path, overrides)
    check_service(config)
    print(f"{path or 'flags'}: OK ({len(config.models)} model(s), {len(config.sources)} source(s))")


def _connect_address(address: str) -> str:
    from streamrnn.addresses import address_problem

    if problem := address_problem(address):
        raise CommandError(f"--connect {address} {problem}")
    return address


def cmd_listen(args) -> None:
    from streamrnn.client import subscribe
    from streamrnn.keys import client_keys

    _connect_address(args.connect)
    keys = client_keys(args.server_key, args.key)
    for n, event in enumerate(subscribe(args.connect, args.topic or [""], timeout=args.timeout, keys=keys), 1):
        print(json.dumps(event.to_dict()), flush=True)
        if n == args.count:
            break


def cmd_send(args) -> None:
    from streamrnn.keys import client_keys
    from streamrnn.send import send
    from streamrnn.service.sources import unique_stream_ids

    _connect_address(args.connect)
    keys = client_keys(args.server_key, args.key)
    ids = [args.stream] if args.stream and len(args.files) == 1 else unique_stream_ids(args.files)
    for path, stream in zip(args.files, ids):
        count = send(path, args.connect, stream, not args.fast, args.rate, keys=keys, timeout=args.timeout)
        print(f"{path}: {count} messages as stream {stream}", file=sys.stderr)


def cmd_eval(args) -> None:
    from streamrnn.evaluation.workflow import EvalRequest, run_eval

    request = EvalRequest(
        model=args.model,
        data=args.data,
        recipe=args.recipe,
        split=args.split,
        data_root=args.data_root,
        device=args.device,
        out=args.out,
        as_json=args.json,
        detect=args.detect,
        negatives=args.negatives or [],
        snrs=[None if s == "clean" else float(s) for s in args.snr or ["clean", "10", "0"]],
        pick_fa_per_hour=args.pick_fa_per_hour,
        write=args.write,
        settings=_decision_settings(args),
        gate=_gate(args),
    )
    print(run_eval(request), end="")


def cmd_bench(args) -> None:
    from streamrnn.dev.bench_service import measure_apart

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    log("bench: service latency and memory (first: a process holding onnxruntime keeps its pages in the service)")
    service = measure_apart(args.quick)
    from streamrnn.dev.bench import run, table

    report = run(service, quick=args.quick, device=args.device, log=log, gate=args.gate)
    print(json.dumps(report) if args.json else table(report), end="\n" if args.json else "")


def cmd_demo(args) -> None:
    from streamrnn.dev.demo import demo

    raise SystemExit(demo())


def _add_decision_flags(p: argparse.ArgumentParser) -> None:
    """The decision layer's settings as the offline commands take them (defaults DecisionSettings')."""
    from streamrnn.decision import DecisionSettings

    d = DecisionSettings()
    for name, kind in (("smoothing", int), ("patience", int), ("refractory", float)):
        default = getattr(d, name)
        p.add_argument(f"--{name}", type=kind, default=default, help=f"{DECISION_HELP[name]} (default {default:g})")


def _add_service_flags(p: argparse.ArgumentParser) -> None:
    """What `serve` and `wyoming` share: config, models, --check, thresholds and SERVE_FLAGS."""
    p.add_argument("--config", help="TOML config (default /etc/streamrnn/streamrnn.toml when present)")
    p.add_argument("--model", action="append", help="model name or .onnx path (repeatable; replaces the config's)")
    p.add_argument("--check", action="store_true", help="validate the configuration and models, then exit")
    _add_threshold_flag(p, "for every model that has the label")
    for flag, (setting, kind, text) in SERVE_FLAGS.items():
        p.add_argument(flag, dest=setting.replace(".", "_"), type=kind, help=text)


def _add_threshold_flag(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--threshold",
        type=_threshold,
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help=f"a label's threshold, {where} (repeatable)",
    )


def _add_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bundled model name or path to a .onnx contract")


def _add_device_flag(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--device", choices=DEVICES, default="cpu", help=f"where onnxruntime runs{more}")


def _add_json_flag(p: argparse.ArgumentParser, what: str = "one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what}")


def _add_key_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-key", help="CURVE: the service's public key file (NAME.key, from streamrnn keys)")
    p.add_argument("--key", help="CURVE: this client's secret key file (NAME.key_secret)")


def cmd_wyoming(args) -> None:
    args.source = [f"wyoming:{args.uri}"]
    cmd_serve(args)


def cmd_proxy(args) -> None:
    from streamrnn.proxy import proxy

    proxy(args.connect, args.publish, args.insecure)


def cmd_keys(args) -> None:
    from streamrnn.keys import make_key_pair

    public, secret = make_key_pair(args.dir, args.name, args.allow)
    allowed = f"; allowed in {args.allow}" if args.allow else ""
    print(f"public key {public} (give it to the other side{allowed}); secret key {secret} (keep it, mode 600)")


def cmd_review(args) -> None:
    from streamrnn.review import review_in_terminal, serve_page

    if args.html:
        serve_page(args.dir, args.html, args.insecure)
    else:
        review_in_terminal(args.dir)


def _add_data_root_flag(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--data-root", help=f"data root folder{more} (overrides data.root)")


def _add_gate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gate-dbfs",
        type=float,
        default=0.0,
        help="audio models skip quiet chunks under this level once --gate-settle seconds of quiet have run (0: off)",
    )
    p.add_argument("--gate-settle", type=float, default=0.5, help="seconds of quiet run before the gate skips")


def _gate(args):
    """The gate --gate-dbfs and --gate-settle ask for (None: off)."""
    from streamrnn.runtime import Gate

    try:
        return Gate.of(args.gate_dbfs, args.gate_settle)
    except ValueError as exc:
        raise CommandError(f"--gate-dbfs {args.gate_dbfs:g} --gate-settle {args.gate_settle:g}: {exc}") from None


def _decision_settings(args):
    from streamrnn.decision import DecisionSettings

    return DecisionSettings(args.smoothing, args.patience, args.refractory)


def _add_recognition_commands(sub) -> None:
    """What a recognizing device and the programs around it run."""
    p = sub.add_parser("models", help="list bundled and installed models")
    _add_json_flag(p, "one JSON array")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("samples", help="list the bundled example recordings (paths to try detect or serve on)")
    p.set_defaults(run=cmd_samples)

    p = sub.add_parser("install-model", help="install a contract file where serve and the systemd units find it")
    p.add_argument("file", metavar="FILE", help="a .onnx contract file (e.g. what train-wakeword exported)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dir", help="into this folder (default: your ~/.local/share/streamrnn/models)")
    where.add_argument("--service", action="store_true", help="into /var/lib/streamrnn/models, for the systemd units")
    p.set_defaults(run=cmd_install_model)

    p = sub.add_parser("detect", help="run models over audio files or sensor CSVs, print detections as JSON lines")
    p.add_argument("--model", required=True, action="append", help="bundled model name or .onnx path (repeatable)")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg) or sensor CSVs")
    p.add_argument("--rate", type=float, help="rows per second of sensor CSVs (default: the model's rate)")
    p.add_argument("--scores", action="store_true", help="print per-frame scores instead")
    _add_threshold_flag(p, "in every model that has the label")
    _add_decision_flags(p)
    _add_gate_flags(p)
    _add_device_flag(p)
    p.set_defaults(run=cmd_detect)

    p = sub.add_parser("serve", help="run the recognizer service")
    p.add_argument(
        "--source",
        action="append",
        help="FILE, - (s16le PCM on stdin), mic[:DEVICE], pull:ADDR, sub:ADDR, wyoming:tcp://HOST:PORT (repeatable)",
    )
    p.add_argument("--fast", action="store_true", help="read file sources as fast as possible")
    _add_service_flags(p)
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser(
        "listen",
        help="print the service's events as JSON lines (until --count, --timeout or Ctrl-C; it outlives the service)",
    )
    p.add_argument("--connect", default=DEFAULT_PUBLISH, help="event address")
    p.add_argument("--topic", action="append", help="topic prefix, e.g. detection or detection.mic (repeatable)")
    p.add_argument("--count", type=int, help="exit after this many events")
    p.add_argument("--timeout", type=float, help="exit after this many seconds without an event")
    _add_key_flags(p)
    p.set_defaults(run=cmd_listen)

    p = sub.add_parser("send", help="push audio or sensor CSV files to a service's ingest socket")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--connect", required=True, help="ingest address (the service's pull:ADDR)")
    p.add_argument("--stream", help="stream id (one file only; default: the file name)")
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    p.add_argument("--rate", type=float, help="sample rate of CSV sensor frames")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the service to take a message")
    _add_key_flags(p)
    p.set_defaults(run=cmd_send)

    p = sub.add_parser("wyoming", help="serve wake words to Home Assistant over Wyoming (serve with a wyoming source)")
    p.add_argument("--uri", default="tcp://127.0.0.1:10400", help="where Wyoming clients connect (tcp://HOST:PORT)")
    _add_service_flags(p)
    p.set_defaults(run=cmd_wyoming, fast=False)

    p = sub.add_parser("proxy", help="one event address for several services (ZeroMQ's XSUB/XPUB proxy)")
    p.add_argument("--connect", action="append", required=True, help="a service's event address (repeatable)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555", help="address subscribers connect to")
    p.add_argument("--insecure", action="store_true", help="allow a --publish address other machines can reach")
    p.set_defaults(run=cmd_proxy)

    p = sub.add_parser("keys", help="make a CURVE key pair (NAME.key public, NAME.key_secret secret)")
    p.add_argument("name", help="whose keys: server, or a client's name")
    p.add_argument("--dir", default=".", help="folder to write them to (default: here)")
    p.add_argument(
        "--allow", metavar="DIR", help="also put the public key into this folder of clients a service lets in"
    )
    p.set_defaults(run=cmd_keys)

    p = sub.add_parser("review", help="mark captured detections and near misses as holding their phrase or not")
    p.add_argument("dir", metavar="DIR", help="the capture folder ([capture] dir, --capture-dir)")
    p.add_argument(
        "--html",
        nargs="?",
        const="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="serve a page with audio players instead of asking here (default 127.0.0.1:8765)",
    )
    p.add_argument("--insecure", action="store_true", help="allow an --html address other machines can reach")
    p.set_defaults(run=cmd_review)


def _add_evaluation_commands(sub) -> None:
    """What a model developer runs to measure models (runtime install)."""
    p = sub.add_parser("eval", help="accuracy, per-label precision/recall and confusion on labelled clips")
    _add_model_flag(p)
    p.add_argument("data", nargs="*", metavar="DATA", help="folders with a subfolder of clips per label")
    p.add_argument("--recipe", help="evaluate on this training recipe's data split instead")
    p.add_argument("--split", default="test", choices=["test", "validation", "train", "all"])
    _add_data_root_flag(p, " for --recipe")
    _add_json_flag(p)
    p.add_argument("--out", help="folder for report.md, report.json and confusion.png")
    _add_device_flag(p)
    p.add_argument(
        "--detect",
        action="store_true",
        help="detection on continuous audio: the clips placed into --negatives at each --snr",
    )
    p.add_argument("--negatives", action="append", help="folder of audio never holding the keywords (repeatable)")
    p.add_argument("--snr", action="append", help="clean or a number in dB (repeatable; default clean, 10, 0)")
    p.add_argument(
        "--pick-fa-per-hour",
        type=float,
        metavar="RATE",
        help="with --detect: per label, the lowest threshold with at most RATE false accepts per hour",
    )
    p.add_argument(
        "--write",
        metavar="MODEL.onnx",
        help="with --pick-fa-per-hour: write the thresholds into this contract file's metadata (needs onnx)",
    )
    _add_decision_flags(p)
    _add_gate_flags(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser(
        "fetch-negatives",
        help="download real speech and music that never hold a wake phrase "
        "(Debian packages) for training and evaluation",
    )
    p.add_argument("folder", nargs="?", help="cache folder (default ~/.cache/streamrnn/negatives)")
    p.add_argument("--set", choices=["train", "validation", "eval", "all"], default="all")
    p.add_argument(
        "--from", dest="source", metavar="DIR", help="a folder of the packages' .deb files instead of apt-get download"
    )
    p.set_defaults(run=cmd_fetch_negatives)


def _add_training_commands(sub) -> None:
    """What retrains and ships models (the training extra)."""
    p = sub.add_parser("train", help="train a model from a recipe and export it")
    p.add_argument("recipe", help="recipe TOML file (see training/recipes/)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (last.pt)")
    _add_data_root_flag(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("distill", help="distill the student speech encoder from the pretrained teacher")
    p.add_argument("recipe", help="distillation recipe TOML (training/recipes/encoder.toml)")
    _add_data_root_flag(p)
    p.set_defaults(run=cmd_distill)

    p = sub.add_parser("export", help="export a training checkpoint to a contract ONNX file")
    p.add_argument("checkpoint")
    p.add_argument("--out", help="output .onnx path (default: beside the checkpoint)")
    p.add_argument("--chunk", type=int, help="frames per call (default: the recipe's)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("train-wakeword", help="train a wake-word detector for any phrases from text alone")
    p.add_argument(
        "phrases",
        nargs="+",
        metavar="PHRASE",
        help='a wake phrase, e.g. "hey nova" (its label: hey nova); several give one model with a label each',
    )
    p.add_argument("--name", help="model name (default: the phrases, e.g. hey_nova or computer_jarvis)")
    p.add_argument(
        "--recordings",
        action="append",
        metavar="DIR",
        help="a folder of your own recordings of the (one) phrase, added to the positives (repeatable), "
        "e.g. a reviewed capture folder's positive/LABEL",
    )
    p.add_argument(
        "--negatives",
        action="append",
        metavar="DIR",
        help="a folder of audio that holds no phrase, trained as background with extra weight (repeatable), "
        "e.g. a reviewed capture folder's negative/",
    )
    p.add_argument("--recipe-out", metavar="PATH", help="where to write the recipe (default runs/recipes/)")
    p.add_argument("--recipe-only", action="store_true", help="write the recipe, do not train")
    p.add_argument("--install", action="store_true", help="install the trained model (see install-model)")
    _add_data_root_flag(p)
    p.set_defaults(run=cmd_train_wakeword)

    p = sub.add_parser(
        "train-check",
        help="train a second look for a wake word's file: a small model on the encoder's last frames that "
        "confirms or rejects where the score rises, picked on the recipe's validation audio",
    )
    p.add_argument("recipe", help="the recipe the model was trained with (its training side trains the check)")
    p.add_argument("--model", required=True, help="the contract file (or a bundled or installed model's name)")
    p.add_argument("--out", required=True, help="where to write the file with the check")
    p.add_argument("--label", help="the label to check (default: the model's one label)")
    p.add_argument("--frames", type=int, default=20, help="encoder frames the check reads (default 20: 1.6 s)")
    p.add_argument(
        "--fa-per-hour", type=float, default=0.0, help="false accepts an hour to pick at (default: the recipe's)"
    )
    p.add_argument("--version", default="", help="the version to write (default: the model's)")
    _add_data_root_flag(p)
    p.set_defaults(run=cmd_train_check)

    p = sub.add_parser(
        "build-conversation",
        help="English conversation that never says a wake phrase (real Speech Commands words in turns and "
        "synthetic dialogue), transcribed with Whisper tiny.en, into the negatives cache",
    )
    p.add_argument("folder", nargs="?", help="cache folder (default ~/.cache/streamrnn/negatives)")
    p.add_argument(
        "--avoid",
        action="append",
        metavar="PHRASE",
        help="leave out every recording whose transcript holds this phrase (repeatable; "
        "default: the bundled wake phrases)",
    )
    p.add_argument(
        "--words",
        action="append",
        metavar="DIR",
        help="a Speech Commands folder (a folder per word) to string into turns (repeatable; "
        "default: speech_commands_extra under the data root, if there)",
    )
    p.add_argument(
        "--sentences",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALIDATION", "EVAL"),
        help="synthetic dialogue: sentences per split (default 1500 400 400)",
    )
    p.add_argument(
        "--engines",
        nargs="+",
        metavar="ENGINE",
        help="the dialogue's voices (default: the wake-word template's: piper, pico, rhvoice, festival, flite, "
        "espeak-ng)",
    )
    _add_data_root_flag(p)
    p.set_defaults(run=cmd_build_conversation)

    p = sub.add_parser(
        "fetch-voices",
        help="download Kokoro's voices (npm registry, checksum pinned) for synthetic speech; once, before training",
    )
    p.add_argument("folder", nargs="?", help="cache folder (default ~/.cache/streamrnn/voices)")
    p.add_argument(
        "--from", dest="source", metavar="FILE|URL", help="a copy of the kokoro-js 1.2.1 tarball (same checksum)"
    )
    p.set_defaults(run=cmd_fetch_voices)


def _add_maintainer_commands(sub) -> None:
    """What a maintainer runs."""
    p = sub.add_parser("bench", help="measure CPU per stream, streams per core, service latency and memory")
    _add_json_flag(p)
    p.add_argument(
        "--quick", action="store_true", help="every headline figure in about a minute (fewer repeats, shorter runs)"
    )
    _add_device_flag(p, " (cuda: also batched streams on the GPU)")
    p.add_argument(
        "--gate",
        metavar="FOLDER",
        help="also measure the quiet gate (-50 dBFS, 0.5 s) on this folder's recordings, each model with and without",
    )
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("demo", help="serve the bundled example recording and print its detections")
    p.set_defaults(run=cmd_demo)


class _Version(argparse.Action):
    """--version, looked up only when asked: importlib.metadata (and the email package it
    loads) would add about 2.7 MB to every service."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        print(f"{parser.prog} {metadata.version('streamrnn')}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="streamrnn",
        description="Streaming speech and sensor recognition: serve models to microphones, files, remote "
        "senders and Home Assistant; detect in files; train wake words from text. `streamrnn demo` shows it.",
    )
    top.add_argument("--version", action=_Version, help="show the version and exit")
    sub = top.add_subparsers(dest="command", required=True)

    _add_recognition_commands(sub)
    _add_evaluation_commands(sub)
    _add_training_commands(sub)
    _add_maintainer_commands(sub)
    return top


def main(argv: list[str] | None = None, early_signals: EarlySignals | None = None) -> int:
    """Run one command; `early_signals` are those a service kept before this (streamrnn/__main__.py)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.early_signals = early_signals
    try:
        args.run(args)
    except (
        CommandError,
        ValueError,
    ) as exc:  # ours (ContractError, AudioError, RecipeError, ...) derive from ValueError
        for line in str(exc).splitlines():  # a config may have several problems, one line each
            print(f"streamrnn: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
