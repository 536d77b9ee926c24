"""Labelled clips on disk: which file has which label and group, and which split it falls in.

Shared by training (`streamrnn.training.data`) and evaluation (`streamrnn eval`), so both put the
same speakers in the same splits. Torch-free.

Audio layouts: `folders` (a folder per label), `speech_commands` (folders per word; `_unknown_` from
the other word folders and `_silence_` from `_background_noise_` where those folders are missing)
`files` (one flat folder; `label_regex` takes the label from each file name, `label_map`
renames it, or `label` names one label for every file it selects; files it does not match are
not part of the dataset) and `tree` (every audio file under the folder, at any depth, has the one
`label`: long recordings of negatives, or a user's own recordings of a wake phrase). Sensor layouts: `ts` (sktime
.ts files) and `csv` (a folder per label; a .csv file per recording, a row per time step, or a .txt
file of many recordings, each opened by a `-,-,-,N` header line, as the magic_wand gestures are).
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamrnn.sensors import read_csv

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


class DataError(ValueError):
    """Data that cannot be used; the message names the folder, file or label."""


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    group: str  # speaker or recording: never split across train/validation/test
    train_only: bool = False  # from a source that only trains (`train_only` extra data)


def stable_hash(text: str) -> float:
    """A number in [0, 1) that depends on the text only (not on the Python process)."""
    return zlib.crc32(text.encode()) / 2**32


def split_of(group: str, validation: float, test: float, validation_groups=(), test_groups=()) -> str:
    """Named groups go where they are named; the rest by a stable hash of the group."""
    if group in test_groups:
        return "test"
    if group in validation_groups:
        return "validation"
    if validation_groups or test_groups:
        return "train"
    h = stable_hash(group)
    return "test" if h < test else "validation" if h < test + validation else "train"


def audio_files(folder: Path, recursive: bool = False) -> list[Path]:
    return sorted(
        p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES
    )


# The negatives sets `streamrnn fetch-negatives` fetches (Debian packages, each unpacked into a
# folder of the negatives cache): what each package is and its licence. Recipes name a package's
# folder as `negatives:PACKAGE` and a whole set's audio as `negatives:SET`.
NEGATIVE_SETS = {
    "train": {
        "asterisk-core-sounds-es-wav": "Spanish telephone prompts, CC-BY-SA-3.0",
        "asterisk-core-sounds-ru-wav": "Russian telephone prompts, CC-BY-SA-3.0",
        "ktuberling-data": "isolated words in many languages, GPL-2+",
        "drascula-music": "game music, Drascula license (free to use and redistribute)",
        "fortunes": "English quotations as text, for synthetic voices to speak (synth.sentence_texts), BSD",
    },
    "validation": {
        "fillets-ng-data-nl": "Dutch voice acting (the lines that say computer removed), GPL-2",
        "tuxpaint-stamps-default": "spoken descriptions in 12 languages (the English ones removed), GPL-2",
        "hedgewars-data": "game music and English voice lines in many characters, GPL-2 and others",
    },
    "eval": {
        "fillets-ng-data-cs": "Czech voice acting, GPL-2",
        "asterisk-core-sounds-en-wav": "English telephone prompts, CC-BY-SA-3.0",
        "asterisk-core-sounds-fr-wav": "French telephone prompts, CC-BY-SA-3.0",
        "asterisk-core-sounds-it-wav": "Italian telephone prompts, CC-BY-SA-3.0",
        "asterisk-moh-opsound-wav": "music on hold, CC-BY-SA-3.0",
    },
}

NEGATIVES = "negatives:"  # a recipe path in the negatives cache: negatives:PACKAGE[/...] or negatives:SET
TEXT_ONLY = {"fortunes"}  # negatives packages of text, not audio


def data_path(root: str, path: str) -> Path:
    """`path` under the data root, unless it is absolute (`~` is expanded in both) or names the
    negatives cache (`negatives:PACKAGE/...`)."""
    if path.startswith(NEGATIVES):
        return cache_folder("negatives") / path.removeprefix(NEGATIVES)
    return Path(root).expanduser() / Path(path).expanduser()


def audio_sets(paths: list[str]) -> list[str]:
    """`paths` with each `negatives:SET` replaced by the folders of that set's audio packages."""
    out = []
    for path in paths:
        name = path.removeprefix(NEGATIVES)
        if path.startswith(NEGATIVES) and name in NEGATIVE_SETS:
            out += [NEGATIVES + p for p in NEGATIVE_SETS[name] if p not in TEXT_ONLY]
        else:
            out.append(path)
    return out


_SKIPPED: set[Path] = set()


def skip_missing(data, path: str, setting: str) -> bool:
    """Whether a folder a recipe names under its data root is to be skipped: it is missing and
    the recipe's data is `optional` (a user without Speech Commands or the noise recordings still
    trains). Said once per folder, on stderr. Folders in the negatives cache or given absolute are
    never skipped: `streamrnn fetch-negatives` brings the former."""
    folder = data_path(data.root, path)
    if not data.optional or path.startswith(NEGATIVES) or Path(path).expanduser().is_absolute() or folder.exists():
        return False
    if folder not in _SKIPPED:
        _SKIPPED.add(folder)
        print(f"{setting} {path}: not under the data root {data.root}; going on without it", file=sys.stderr)
    return True


def default_data_root() -> str:
    """Where recipes find their data unless they say: $STREAMRNN_DATA, else the user's own folder
    $XDG_DATA_HOME/streamrnn/data (by default ~/.local/share/streamrnn/data)."""
    if os.environ.get("STREAMRNN_DATA"):
        return os.environ["STREAMRNN_DATA"]
    return str(Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "streamrnn" / "data")


def cache_folder(name: str) -> Path:
    """The user's cache folder for `name` (negatives, voices, synth): $XDG_CACHE_HOME/streamrnn/NAME,
    by default ~/.cache/streamrnn/NAME."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamrnn" / name


def group_of(regex: re.Pattern | None, path: Path) -> str:
    match = regex.search(path.name) if regex else None
    return match.group(1) if match else path.name


def _by_folder(root: Path, layout: str, labels: list[str], partial: bool = False) -> dict[str, list[Path]]:
    """A folder per label; with `partial` (a second corpus for the same labels) labels without a
    folder get no clips instead of stopping, but one label at least must be found."""
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    labels = labels or sorted(n for n in folders if n != "_background_noise_")
    files = {}
    for label in labels:
        if label in folders:
            files[label] = audio_files(folders[label])
        elif layout == "speech_commands" and label == "_unknown_":
            files[label] = [
                f
                for name, p in folders.items()
                if name not in labels and not name.startswith("_")
                for f in audio_files(p)
            ]
        elif layout == "speech_commands" and label == "_silence_" and "_background_noise_" in folders:
            files[label] = audio_files(folders["_background_noise_"])
        elif not partial:
            raise DataError(f"{root}: no folder for label {label!r}")
    if not any(files.values()):
        raise DataError(f"{root}: no audio files in a folder of any label ({', '.join(labels)})")
    return files


def _by_name(
    root: Path, labels: list[str], label_regex: str, label_map: dict[str, str], label: str = ""
) -> dict[str, list[Path]]:
    if not label_regex:
        raise DataError(f"{root}: layout 'files' needs a label_regex to find labels in file names")
    regex = re.compile(label_regex)
    files: dict[str, list[Path]] = {x: [] for x in labels}
    for path in audio_files(root):
        match = regex.search(path.name)
        if match is None:
            continue  # not part of this dataset
        found = label or label_map.get(match.group(1), match.group(1))
        if labels and found not in files:
            continue
        files.setdefault(found, []).append(path)
    if not any(files.values()):
        raise DataError(f"{root}: label_regex {label_regex!r} matches no file name")
    return files if labels else dict(sorted(files.items()))


def list_clips(
    root: Path,
    layout: str = "folders",
    labels: list[str] | None = None,
    group_regex: str = "",
    label_regex: str = "",
    label_map: dict[str, str] | None = None,
    max_per_label: int = 0,
    label: str = "",
    partial: bool = False,
) -> tuple[list[str], list[Clip]]:
    """(labels, clips) of an audio dataset; `max_per_label` picks a fixed subset per label;
    `label` (layout files) gives every file the regex selects that one label; `partial` (folder
    layouts) lets labels without a folder go without clips."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    if layout == "tree":
        files = {label: audio_files(root, recursive=True)}
        if not files[label]:
            raise DataError(f"{root}: no audio files (layout tree)")
    elif layout == "files":
        files = _by_name(root, labels or [], label_regex, label_map or {}, label)
    else:
        files = _by_folder(root, layout, labels or [], partial)
    regex = re.compile(group_regex) if group_regex else None
    clips = []
    for label, paths in files.items():
        if max_per_label:
            paths = sorted(paths, key=lambda p: stable_hash(p.name))[:max_per_label]
        clips += [Clip(p, label, group_of(regex, p)) for p in paths]
    return list(files), clips


def recipe_clips(data, path: str, with_train_only: bool = True) -> tuple[list[str], list[Clip]]:
    """The audio clips a recipe's [data] settings select under `data.root/path`; for the main path
    its [[data.extra]] sources too (which need not hold every label), each capped at its
    max_per_label and max_clips (the `train_only` ones only `with_train_only`: they never reach
    validation or test). Training and `streamrnn eval` both draw clips here, so they see the same ones."""
    d = data
    if skip_missing(d, path, "data.path" if path == d.path else "data.test_path") and d.layout == "tree":
        labels, clips = d.labels, list[Clip]()
    else:
        folder = data_path(d.root, path)
        labels, clips = list_clips(
            folder, d.layout, d.labels, d.group_regex, d.label_regex, d.label_map, d.max_per_label, d.label
        )
    if d.layout == "tree":
        labels = d.labels
    for extra in d.extra if path == d.path else []:
        if (extra.train_only and not with_train_only) or skip_missing(d, extra.path, "[[data.extra]] path"):
            continue
        _, more = list_clips(
            data_path(d.root, extra.path),
            extra.layout,
            labels,
            extra.group_regex,
            extra.label_regex,
            extra.label_map,
            extra.max_per_label or d.max_per_label,
            extra.label,
            partial=True,
        )
        if extra.max_clips:
            more = sorted(more, key=lambda c: stable_hash(c.path.name))[: extra.max_clips]
        if extra.train_only:
            more = [replace(c, train_only=True) for c in more]
        clips += more * extra.repeat
    return labels, clips


def recipe_split(group: str, data, train_only: bool = False) -> str:
    """The split a recipe puts a group in; with a separate `test_path` the main data gives only
    train and validation; clips of a `train_only` source always train."""
    if train_only:
        return "train"
    return split_of(
        group, data.validation, 0.0 if data.test_path else data.test, data.validation_groups, data.test_groups
    )


def parse_ts(path: Path) -> tuple[list[str], list[tuple[np.ndarray, str]]]:
    """sktime .ts: header lines, then `@data` and one `dim:dim:...:label` line per recording."""
    class_labels, rows, in_data = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lower = line.lower()
        if lower.startswith("@classlabel"):
            class_labels = line.split()[2:]
        elif lower.startswith("@data"):
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            try:
                series = np.array([[float(v) for v in dim.split(",")] for dim in dims], np.float32)
            except ValueError:
                raise DataError(f"{path}:{number}: not a row of numbers") from None
            rows.append((series.T, label.strip()))
    if not rows:
        raise DataError(f"{path}: no @data rows")
    return class_labels, rows


def read_txt_recordings(path: Path) -> list[np.ndarray]:
    """The recordings of a .txt file of many: each opened by a line of dashes and a number
    (`-,-,-,N`), then one row of comma-separated numbers per time step."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    recordings: list[list[list[float]]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("-,"):
            recordings.append([])
            continue
        if not recordings:
            raise DataError(f"{path}:{number}: data before the first '-,-,-,N' header line")
        try:
            recordings[-1].append([float(v) for v in line.split(",")])
        except ValueError:
            raise DataError(f"{path}:{number}: not a row of numbers") from None
    if not any(recordings):
        raise DataError(f"{path}: no recordings ('-,-,-,N' header lines followed by rows)")
    try:
        return [np.array(rows, np.float32) for rows in recordings if rows]
    except ValueError:
        raise DataError(f"{path}: rows of different lengths") from None


def sensor_recordings(
    root: Path, layout: str, labels: list[str] | None = None
) -> tuple[list[str], list[tuple[np.ndarray, str, str]]]:
    """(labels, [(samples [n, channels], label, group)]) of sensor data: a .ts file or a folder of
    them, or a folder per label of .csv recordings and .txt files of many recordings; each
    recording is its own group (`label/file.csv`, or `label/file.txt#i`, i counted from 0)."""
    root = Path(root)
    recordings: list[tuple[np.ndarray, str, str]] = []
    if layout == "ts":
        files = sorted(root.glob("*.ts")) if root.is_dir() else [root]
        if not files or not files[0].exists():
            raise DataError(f"{root}: no .ts files")
        found: list[str] = []
        for f in files:
            class_labels, rows = parse_ts(f)
            found += [x for x in class_labels if x not in found]
            recordings += [(s, label, f"{f.name}#{i}") for i, (s, label) in enumerate(rows)]
        labels = labels or found
    else:
        if not root.is_dir():
            raise DataError(f"{root}: data folder does not exist")
        labels = labels or sorted(p.name for p in root.iterdir() if p.is_dir())
        for label in labels:
            if not (root / label).is_dir():
                raise DataError(f"{root}: no folder for label {label!r}")
            recordings += [(read_csv(f), label, f"{label}/{f.name}") for f in sorted((root / label).glob("*.csv"))]
            recordings += [
                (x, label, f"{label}/{f.name}#{i}")
                for f in sorted((root / label).glob("*.txt"))
                for i, x in enumerate(read_txt_recordings(f))
            ]
    return list(labels), [r for r in recordings if r[1] in labels]
