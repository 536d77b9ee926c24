"""Finding models: bundled contract files, installed ones, and `--model NAME|PATH` resolution.

Search order: the folders in $STREAMRNN_MODEL_PATH (colon-separated), the user's
$XDG_DATA_HOME/streamrnn/models (default ~/.local/share/streamrnn/models), the system service's
/var/lib/streamrnn/models, /usr/share/streamrnn/models, then the models bundled in the package.
`install_model` copies a contract file into the user's folder or the service's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streamrnn.contract import ContractError, ModelInfo
from streamrnn.runtime import open_contract

BUNDLED = Path(__file__).parent / "models"
SERVICE_MODELS = Path("/var/lib/streamrnn/models")  # where the systemd units look (their state folder)


def model_dirs() -> list[tuple[str, Path]]:
    """(origin, folder) pairs in search order."""
    dirs = [("path", Path(p)) for p in os.environ.get("STREAMRNN_MODEL_PATH", "").split(":") if p]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    dirs += [
        ("user", data_home / "streamrnn" / "models"),
        ("service", SERVICE_MODELS),
        ("system", Path("/usr/share/streamrnn/models")),
        ("bundled", BUNDLED),
    ]
    return dirs


def list_models() -> tuple[list[tuple[str, ModelInfo]], list[str]]:
    """Every readable contract file as (origin, info), and one line per file that failed."""
    found, errors = [], []
    for origin, folder in model_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.onnx")):
            try:
                found.append((origin, open_contract(path)[1]))
            except ContractError as exc:
                errors.append(str(exc))
    return found, errors


def resolve_model(spec: str) -> Path:
    """A path to a contract file, or the name of an installed or bundled model."""
    path = Path(spec)
    if path.suffix == ".onnx" or os.sep in spec:
        if not path.is_file():
            raise ContractError(f"{spec}: no such model file")
        return path
    for _, folder in model_dirs():
        candidate = folder / f"{spec}.onnx"
        if candidate.is_file():
            return candidate
    models, _ = list_models()
    for _, info in models:
        if info.name == spec:
            return info.path
    names = sorted({info.name for _, info in models})
    raise ContractError(
        f"model {spec!r} not found (available: {', '.join(names) or 'none'}; or give a path to a .onnx contract file)"
    )


def install_model(path: str | Path, folder: str | Path | None = None) -> Path:
    """Copy a contract file (checked first) into `folder`, by default the user's models folder,
    as NAME.onnx after its metadata name, with its model card (NAME.md beside it) if there is
    one; returns the installed file. `--model NAME` then finds it, and a running service that
    names it in its config loads it on reload."""
    _, info = open_contract(path)
    target = Path(folder) if folder else dict(model_dirs())["user"]
    target.mkdir(parents=True, exist_ok=True)
    installed = target / f"{info.name}.onnx"
    shutil.copyfile(path, installed)
    card = Path(path).with_suffix(".md")
    if card.is_file():
        shutil.copyfile(card, target / f"{info.name}.md")
    return installed
