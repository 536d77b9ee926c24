"""The bundled example recordings (audio and sensor CSVs; README.md here says what each holds),
installed with the package: `sample("demo.flac")` is a path to one, `streamrnn samples` lists them."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def sample(name: str) -> Path:
    """The installed path of a bundled example file."""
    path = FOLDER / name
    if not path.is_file() or path.suffix not in (".flac", ".csv"):
        names = ", ".join(p.name for p in samples())
        raise FileNotFoundError(f"no bundled sample {name!r} (there are: {names})")
    return path


def samples() -> list[Path]:
    return sorted(p for p in FOLDER.iterdir() if p.suffix in (".flac", ".csv"))
