"""Sensor recordings on disk: a CSV of numbers, a row per time step and a column per channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class SensorFileError(ValueError):
    """A sensor file that cannot be read; the message names it."""


def read_csv(path: Path) -> np.ndarray:
    """A CSV of numbers as float32 [rows, columns]; a first row that is not numbers is a header."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SensorFileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        float(lines[0].split(",")[0])
        skip = 0
    except (ValueError, IndexError):
        skip = 1
    try:
        return np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise SensorFileError(f"{path}: not a CSV of numbers ({exc})") from None
