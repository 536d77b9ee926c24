"""`streamrnn train-wakeword PHRASE`: a recipe for any phrase, from the wake-word template.

The recipe trains from text alone (see recipes/wakeword.toml.in); folders of the user's own
recordings of the phrase join the positives (split by file like any other data).
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

from .recipe import RecipeError

RECORDINGS = '''
[[data.extra]]                       # your own recordings of the phrase
path = {path}
layout = "tree"
label = {phrase}
'''


def model_name(phrase: str) -> str:
    """A file-safe model name for a phrase: `hey nova` -> `hey_nova`."""
    name = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
    if not name:
        raise RecipeError(f"wake phrase {phrase!r} has no letters or digits")
    return name


def recipe_text(phrase: str, name: str | None = None, recordings: list[str] = ()) -> str:
    """The wake-word recipe for `phrase` (lower case, single spaces: also its label) as TOML text."""
    phrase = " ".join(phrase.lower().split())
    name = name or model_name(phrase)
    template = files("streamrnn.training.recipes").joinpath("wakeword.toml.in").read_text()
    extra = "".join(RECORDINGS.format(path=json.dumps(str(Path(r).expanduser().resolve())), phrase=json.dumps(phrase))
                    for r in recordings)
    return template.format(phrase=json.dumps(phrase), phrase_bare=phrase.replace('"', "'"), name=json.dumps(name),
                           recordings=extra)


def write_recipe(phrase: str, out: str | Path, name: str | None = None, recordings: list[str] = ()) -> Path:
    """Write the recipe for `phrase` to `out` (a .toml file or a folder) and return its path."""
    for folder in recordings:
        if not Path(folder).expanduser().is_dir():
            raise RecipeError(f"--recordings {folder}: not a folder")
    out = Path(out)
    path = out / f"{name or model_name(phrase)}.toml" if out.suffix != ".toml" else out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_text(phrase, name, recordings))
    return path
