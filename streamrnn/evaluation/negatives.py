"""Real negative audio from Debian packages: speech and music that never hold a wake phrase (and
English text for synthetic voices to speak).

`streamrnn fetch-negatives` downloads the packages with `apt-get download` and unpacks them with
`dpkg-deb -x` into a cache folder, a folder per package. Three disjoint sets: `train` (mixed into
training), `validation` (thresholds are picked on it for a false-accept rate) and `eval` (false
accepts per hour are measured on it and on nothing else it trains or picks on).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from fnmatch import fnmatchcase
from pathlib import Path

from streamrnn.recipe.datasets import NEGATIVE_SETS, DataError, cache_folder

# Files removed after unpacking: English descriptions of stamps may name anything (a computer); the
# Dutch voice lines whose text (the game's dialogs_nl.lua) holds "computer", which Dutch shares
REMOVE = {
    "tuxpaint-stamps-default": ("*_desc.ogg",),
    "fillets-ng-data-nl": (
        "disk-v-viry.ogg",
        "disk-v-pozor.ogg",
        "war-v-pohadka.ogg",
        "war-v-prozradit.ogg",
        "sec-m-program.ogg",
        "poc-m-myslis.ogg",
        "poc-v-multimed.ogg",
        "poc-v-napad.ogg",
        "z-m-oblicej.ogg",
        "pz-m-pocitace.ogg",
        "ob-m-strach.ogg",
    ),
}


def default_folder() -> Path:
    return cache_folder("negatives")


def _remove_listed(unpacked: Path, name: str) -> None:
    """Delete the files REMOVE lists for package `name` from its unpacked tree (walked once); a
    pattern that matches nothing stops the fetch: the package changed, and what it must not hold
    may now be there under another name."""
    patterns = REMOVE.get(name, ())
    files = [path for path in unpacked.rglob("*") if path.is_file()] if patterns else []
    for pattern in patterns:
        found = [path for path in files if fnmatchcase(path.name, pattern)]
        if not found:
            raise DataError(f"{name}: no file matches {pattern}, which fetch-negatives removes")
        for path in found:
            path.unlink()


def fetch(folder: Path, which: str = "all", debs: Path | None = None) -> list[Path]:
    """Download and unpack the packages of `which` (train, validation, eval or all) that are not
    there yet; returns their folders. With `debs`, a folder holding the packages' .deb files (as
    `apt-get download` leaves them, e.g. fetched on another machine) instead of downloading."""
    names = [n for kind, packages in NEGATIVE_SETS.items() if which in (kind, "all") for n in packages]
    for tool in ("dpkg-deb",) if debs else ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"fetch-negatives needs {tool} (Debian or Ubuntu)")
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        target = folder / name
        if not target.is_dir():
            with tempfile.TemporaryDirectory(dir=folder) as work:
                deb = _local_deb(debs, name) if debs else _download(name, Path(work))
                unpacked = Path(work) / "root"
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
                _remove_listed(unpacked, name)
                unpacked.rename(target)
        done.append(target)
    return done


def _download(name: str, work: Path) -> Path:
    got = subprocess.run(["apt-get", "download", name], cwd=work, capture_output=True, text=True)
    debs = list(work.glob(f"{name}_*.deb"))
    if got.returncode or not debs:
        raise DataError(f"apt-get download {name} failed: {got.stderr.strip().splitlines()[-1:]}")
    return debs[0]


def _local_deb(folder: Path, name: str) -> Path:
    debs = sorted(folder.glob(f"{name}_*.deb"))
    if not debs:
        raise DataError(f"{folder}: no {name}_*.deb (apt-get download {name} makes one)")
    return debs[-1]
