"""The `streamrnn` command: parse arguments and call the module that does the work."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


TRAIN_EXTRA = "needs the training extra: pip install 'streamrnn[train]' (torch, torchaudio, onnx)"


class CommandError(Exception):
    """A failure to report as one line and exit 1."""


def _need_training(command: str) -> None:
    try:
        import torch  # noqa: F401
        import torchaudio  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        raise CommandError(f"streamrnn {command} {TRAIN_EXTRA}") from None


def _threshold(text: str) -> tuple[str, float]:
    label, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not sep or not label or not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=VALUE with VALUE in [0, 1]")
    return label, number


def cmd_train(args) -> None:
    _need_training("train")
    from .training.recipe import load_recipe
    from .training.train import train
    train(load_recipe(args.recipe, args.data_root), args.resume)


def cmd_export(args) -> None:
    _need_training("export")
    from .deploy.export import export_checkpoint
    print(export_checkpoint(args.checkpoint, args.out, args.chunk))


def cmd_models(args) -> None:
    from .catalog import list_models
    models, errors = list_models()
    for line in errors:
        print(f"streamrnn: skipped {line}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"origin": origin, **info.as_dict()} for origin, info in models], indent=2))
        return
    for origin, info in models:
        print(f"{info.name:<12} {info.version:<8} {info.kind:<6} {info.cell:<4} "
              f"{len(info.labels):>3} labels  {int(info.sample_rate)} Hz  chunk {info.chunk}  "
              f"[{origin}] {info.path}")
    if not models:
        print("no models found", file=sys.stderr)


def cmd_detect(args) -> None:
    from .catalog import resolve_model
    from .decision import DecisionSettings
    from .detect import detect_files, score_files
    from .events import Stamper
    from .runtime import StreamingModel
    model = StreamingModel(resolve_model(args.model), device=args.device)
    unknown = [label for label, _ in args.threshold if label not in model.info.labels]
    if unknown:
        raise CommandError(f"--threshold: {', '.join(unknown)} not a label of model "
                           f"{model.info.name} ({', '.join(model.info.labels)})")
    if args.scores:
        hop = model.info.frame_seconds
        for stream, scores in score_files(model, args.files).items():
            for i, row in enumerate(scores):
                print(json.dumps({"stream": stream, "frame": i, "end": round((i + 1) * hop, 4),
                                  "scores": dict(zip(model.info.labels, np.round(row, 5).tolist()))}))
        return
    settings = DecisionSettings(args.smoothing, args.patience, args.refractory)
    stamper = Stamper()
    for event in detect_files(model, args.files, settings, dict(args.threshold)):
        print(json.dumps(stamper.stamp(event)), flush=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="streamrnn", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a recipe and export it")
    p.add_argument("recipe", help="recipe TOML file (see training/recipes/)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (last.pt)")
    p.add_argument("--data-root", help="data root folder (overrides data.root)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("export", help="export a training checkpoint to a contract ONNX file")
    p.add_argument("checkpoint")
    p.add_argument("--out", help="output .onnx path (default: beside the checkpoint)")
    p.add_argument("--chunk", type=int, help="frames per call (default: the recipe's)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("models", help="list bundled and installed models")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("detect", help="run a model over audio files, print detections as JSON lines")
    p.add_argument("--model", required=True, help="bundled model name or path to a .onnx contract")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg)")
    p.add_argument("--scores", action="store_true", help="print per-frame scores instead")
    p.add_argument("--threshold", type=_threshold, action="append", default=[],
                   metavar="LABEL=VALUE", help="override a label's threshold (repeatable)")
    p.add_argument("--smoothing", type=int, default=3, help="frames averaged (default 3)")
    p.add_argument("--patience", type=int, default=2, help="frames above threshold (default 2)")
    p.add_argument("--refractory", type=float, default=1.0, help="seconds of silence after a detection")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.set_defaults(run=cmd_detect)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (CommandError, ValueError) as exc:  # ours (ContractError, AudioError, RecipeError, ...) derive from ValueError
        print(f"streamrnn: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
