"""`streamrnn train-wakeword PHRASE [PHRASE ...]`: a recipe for any phrases, from the wake-word
template: one model with a label per phrase.

The recipe trains from text alone (see recipes/wakeword.toml.in); folders of the user's own
recordings of a single phrase join its positives (split by file like any other data), and
folders of audio that must not fire (a reviewed capture folder's negative/) join the background,
every clip of them trained on NEGATIVE_REPEAT times a pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from streamrnn.recipe.schema import RecipeError

RECORDINGS = """
[[data.extra]]                       # your own recordings of the phrase
path = {path}
layout = "tree"
label = {phrase}
"""

NEGATIVE_REPEAT = 20  # a false accept heard once outweighs one of the ~20,000 other clips
NEGATIVES = """
[[data.extra]]                       # audio that must not fire (e.g. reviewed captures)
path = {path}
layout = "tree"
label = "_background_"
train_only = true
repeat = {repeat}
"""


def label(phrase: str) -> str:
    """A phrase's label: its words of letters and digits, lower case, single spaces
    (`"Hey, Nova!"` -> `hey nova`), so labels are safe in event topics and file names."""
    words = re.findall(r"[a-z0-9]+", phrase.lower())
    if not words:
        raise RecipeError(f"wake phrase {phrase!r} has no letters or digits")
    return " ".join(words)


def model_name(phrases: list[str]) -> str:
    """A file-safe model name for phrases: `hey nova` -> `hey_nova`; `computer`, `jarvis` -> `computer_jarvis`."""
    return "_".join(label(p).replace(" ", "_") for p in phrases)


def recipe_text(
    phrases: list[str], name: str | None = None, recordings: Sequence[str] = (), negatives: Sequence[str] = ()
) -> str:
    """The wake-word recipe for `phrases` (each phrase's label as its text) as TOML text."""
    labels = list(dict.fromkeys(label(p) for p in phrases))
    if len(labels) != len(phrases):
        raise RecipeError(f"wake phrases {phrases}: two of them are the same phrase")
    if recordings and len(labels) > 1:
        raise RecipeError("--recordings: with several phrases, train each phrase's recordings in its own model")
    name = name or model_name(labels)
    template = files("streamrnn.training.recipes").joinpath("wakeword.toml.in").read_text()
    extra = [RECORDINGS.format(path=_absolute(r), phrase=json.dumps(labels[0])) for r in recordings]
    extra += [NEGATIVES.format(path=_absolute(n), repeat=NEGATIVE_REPEAT) for n in negatives]
    title = ("Wake word " if len(labels) == 1 else "Wake words ") + " and ".join(labels)
    return template.format(
        labels=json.dumps(labels + ["_background_"]), title=title, name=json.dumps(name), extra="".join(extra)
    )


def _absolute(folder: str) -> str:
    return json.dumps(str(Path(folder).expanduser().resolve()))


def write_recipe(
    phrases: list[str],
    out: str | Path,
    name: str | None = None,
    recordings: Sequence[str] = (),
    negatives: Sequence[str] = (),
) -> Path:
    """Write the recipe for `phrases` to `out` (a .toml file or a folder) and return its path."""
    for flag, folders, other in (("--recordings", recordings, "negative"), ("--negatives", negatives, "positive")):
        for folder in folders:
            if not Path(folder).expanduser().is_dir():
                raise RecipeError(f"{flag} {folder}: not a folder")
            if (Path(folder).expanduser() / other).is_dir():
                raise RecipeError(f"{flag} {folder}: holds a {other}/ folder (a capture folder?): give one inside it")
    out = Path(out)
    path = out / f"{name or model_name(phrases)}.toml" if out.suffix != ".toml" else out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_text(phrases, name, recordings, negatives))
    return path
