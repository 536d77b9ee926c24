"""Detection on continuous audio, the way the service sees it.

False accepts: the negative audio (speech, music, noise that never holds the phrase) alone, each
folder joined and played as 10-minute streams with the state carried, at its recorded level, as a
service hears hours of it; every detection there is a false accept. Misses: positive clips placed
at random, non-overlapping places in the same audio brought to -30 dBFS, at a given SNR; a
detection of the same label whose end falls within a placed keyword (plus `tolerance` seconds) is
a hit. Each set of streams runs through the streaming model once, and the service's decision layer
turns the scores into detections at each threshold of a sweep. Reports: false-reject rate, false
accepts per hour of negative audio (and per folder), latency (detection end minus the end of the
placed clip: clips with trailing silence give negative values), and the DET curve (false-reject
rate against false accepts per hour). The threshold picker chooses, per label, the lowest
threshold whose false accepts per hour on validation audio stay within a target. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from streamrnn.audio import read_many
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.recipe.datasets import AUDIO_SUFFIXES, DataError
from streamrnn.runtime import StreamingModel

NEGATIVE_RMS = 10 ** (-30 / 20)  # level of the negative audio in composed streams
TOLERANCE = 0.5  # seconds after a keyword's end within which its detection still counts
# DET thresholds: finer towards 1, where the false accepts per hour that matter (under one) lie;
# the last few for a check's probabilities (contract.Check), which crowd there
TOP = [0.9995, 0.9998, 0.9999]
SWEEP = tuple(
    np.round(
        np.concatenate(
            [np.arange(0.05, 0.9, 0.05), np.arange(0.9, 0.99, 0.01), [0.99, 0.993, 0.995, 0.997, 0.998, 0.999], TOP]
        ),
        4,
    )
)
PICK_GRID = tuple(np.round(np.concatenate([np.arange(0.05, 0.95, 0.01), np.arange(0.95, 0.9995, 0.001), TOP]), 4))


@dataclass
class Negatives:
    """Negative audio as streams at its recorded level, each with the folder it came from."""

    streams: list[np.ndarray]
    sources: list[str]
    rate: float

    @property
    def hours(self) -> float:
        return sum(len(n) for n in self.streams) / self.rate / 3600

    def hours_by_source(self) -> dict[str, float]:
        hours: dict[str, float] = {}
        for stream, source in zip(self.streams, self.sources):
            hours[source] = hours.get(source, 0.0) + len(stream) / self.rate / 3600
        return hours


@dataclass(frozen=True)
class Placement:
    label: str
    start: float  # seconds of stream time
    end: float


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-12))


def trim_silence(clip: np.ndarray, rate: float, floor_db: float = 35.0, margin: float = 0.1) -> np.ndarray:
    """The clip from `margin` seconds before its first to `margin` after its last 10-ms frame
    within `floor_db` of its loudest: keywords recorded with long silence around them are
    placed (and their SNR measured) by the spoken part."""
    hop = max(1, int(rate / 100))
    frames = len(clip) // hop
    if frames < 2:
        return clip
    level = 10 * np.log10(np.mean(np.square(clip[: frames * hop].reshape(frames, hop)), axis=1) + 1e-12)
    active = np.flatnonzero(level > level.max() - floor_db)
    start = max(0, active[0] * hop - int(margin * rate))
    end = min(len(clip), (active[-1] + 1) * hop + int(margin * rate))
    return clip[start:end]


def compose(
    negative: np.ndarray,
    positives: list[tuple[np.ndarray, str]],
    rate: float,
    snr_db: float | None,
    seed: int,
    gap: float = 2.0,
) -> tuple[np.ndarray, list[Placement]]:
    """Place each positive once into (a copy of) the negative audio, `gap` seconds apart at least,
    trimmed to its spoken part (see trim_silence).

    The negative is first brought to an RMS of NEGATIVE_RMS (-30 dBFS), a room's talk or music
    level, so that keywords placed above it do not clip. `snr_db` None: clean (the negative is
    silenced under the keyword, which keeps its recorded level); otherwise the keyword is scaled
    so its RMS is `snr_db` above the negative stream's (over the whole stream: the span under a
    keyword can be a pause, which would make the keyword near-silent).
    """
    rng = np.random.default_rng(seed)
    positives = [(trim_silence(clip, rate), label) for clip, label in positives]
    audio = negative * np.float32(NEGATIVE_RMS / _rms(negative))
    level = NEGATIVE_RMS
    need = sum(len(p) for p, _ in positives) + gap * rate * (len(positives) + 1)
    if need > len(audio):
        raise ValueError(
            f"--negatives: a stream of {len(audio) / rate:.1f} s of negative audio is too short for its "
            f"{len(positives)} keyword(s) with {gap:g} s around each (give at least {need / rate:.0f} s)"
        )
    slack = len(audio) - int(need)
    cuts = np.sort(rng.integers(0, slack + 1, len(positives)))
    placements, cursor = [], int(gap * rate)
    for (clip, label), extra in zip(positives, np.diff(np.concatenate([[0], cuts]))):
        cursor += int(extra)
        span = slice(cursor, cursor + len(clip))
        if snr_db is None:
            audio[span] = clip
        else:
            audio[span] += clip * (level * 10 ** (snr_db / 20) / _rms(clip))
        placements.append(Placement(label, cursor / rate, (cursor + len(clip)) / rate))
        cursor += len(clip) + int(gap * rate)
    return np.clip(audio, -1, 1), placements


@dataclass
class Scored:
    """Scores of one detection run: the negative streams alone (false accepts) and the streams
    with the positives placed in them (misses)."""

    negatives: Negatives
    negative_scores: list[np.ndarray]
    placed_scores: list[np.ndarray]
    placements: list[list[Placement]]


def scored_streams(
    model: StreamingModel,
    negatives: Negatives,
    positives: list[tuple[np.ndarray, str]],
    snr_db: float | None,
    seed: int,
    negative_scores: list[np.ndarray] | None = None,
) -> Scored:
    """The negative streams scored as they are (unless their scores are given), and the positives
    spread over them (see compose) scored in one batched run."""
    rate = model.info.sample_rate
    per_stream = np.array_split(np.arange(len(positives)), len(negatives.streams))
    composed = [
        compose(neg, [positives[i] for i in idx], rate, snr_db, seed + j)
        for j, (neg, idx) in enumerate(zip(negatives.streams, per_stream))
    ]
    if negative_scores is None:
        negative_scores = model.score(negatives.streams)
    return Scored(negatives, negative_scores, model.score([audio for audio, _ in composed]), [p for _, p in composed])


def _tally(model: StreamingModel, scored: Scored, settings: DecisionSettings, thresholds: dict[str, float] | None):
    """Per label: placed keywords, hits and false accepts (and false accepts per source folder);
    and the hits' latencies (seconds)."""
    tally = {label: {"placed": 0, "hits": 0, "false_accepts": 0} for label in model.info.labels}
    by_source = dict.fromkeys(scored.negatives.sources, 0)
    latencies = []
    for frames, placed in zip(scored.placed_scores, scored.placements):
        found = set()
        for p in placed:
            tally[p.label]["placed"] += 1
        for d in Decider(model.info, settings, thresholds).update(frames):
            match = next(
                (i for i, p in enumerate(placed) if p.label == d.label and p.start <= d.end <= p.end + TOLERANCE), None
            )
            if match is not None and match not in found:  # elsewhere: counted in the negatives alone
                found.add(match)
                tally[d.label]["hits"] += 1
                latencies.append(d.end - placed[match].end)
    for frames, source in zip(scored.negative_scores, scored.negatives.sources):
        for d in Decider(model.info, settings, thresholds).update(frames):
            tally[d.label]["false_accepts"] += 1
            by_source[source] += 1
    return tally, by_source, latencies


def count_detections(
    model: StreamingModel, scored: Scored, settings: DecisionSettings, thresholds: dict[str, float] | None = None
) -> dict:
    """Misses, false accepts and latencies of the decision layer over scored streams; thresholds
    None means the model's own."""
    tally, by_source, latencies = _tally(model, scored, settings, thresholds)
    total = sum(t["placed"] for t in tally.values())
    hits = sum(t["hits"] for t in tally.values())
    false_accepts = sum(t["false_accepts"] for t in tally.values())
    hours = scored.negatives.hours_by_source()
    return {
        "frr": round(1 - hits / total, 4) if total else None,
        "false_accepts": false_accepts,
        "fa_per_hour": round(false_accepts / scored.negatives.hours, 3),
        "fa_per_hour_by_source": {source: round(n / hours[source], 3) for source, n in by_source.items()},
        "latency_ms": {
            "median": round(1000 * float(np.median(latencies)), 1),
            "p95": round(1000 * float(np.percentile(latencies, 95)), 1),
        }
        if latencies
        else None,
    }


def pick_thresholds(
    model: StreamingModel,
    negatives: Negatives,
    positives: list[tuple[np.ndarray, str]],
    fa_per_hour: float,
    settings: DecisionSettings = DecisionSettings(),
    seed: int = 0,
) -> dict:
    """Per reported label, the lowest threshold at which its false accepts per hour on the negative
    streams stay at or under `fa_per_hour` (misses: the positives placed in them, clean); the top
    of the grid where none does. Labels with no positives keep their thresholds (with nothing to
    miss, the lowest threshold would be picked) and are listed in `skipped`. Returns {"thresholds",
    "per_label": {label: frr, fa_per_hour}, "skipped", ...}."""
    scored = scored_streams(model, negatives, positives, None, seed)
    hours = negatives.hours
    spoken = {label for _, label in positives}
    reported = [x for x in model.info.thresholds if x != model.info.background_label]
    labels = [x for x in reported if x in spoken]
    chosen: dict[str, tuple[float, dict]] = {}
    for t in PICK_GRID:  # ascending: the first threshold within the target is the lowest
        tally, _, _ = _tally(model, scored, settings, dict.fromkeys(labels, float(t)))
        for label in labels:
            if label not in chosen and (tally[label]["false_accepts"] / hours <= fa_per_hour or t == PICK_GRID[-1]):
                chosen[label] = (float(t), tally[label])
        if len(chosen) == len(labels):
            break
    return {
        "target_fa_per_hour": fa_per_hour,
        "negative_hours": round(hours, 3),
        "positives": len(positives),
        "thresholds": {label: t for label, (t, _) in chosen.items()},
        "skipped": {label: "no positives: threshold kept" for label in reported if label not in spoken},
        "per_label": {
            label: {
                "threshold": t,
                "frr": round(1 - c["hits"] / c["placed"], 4) if c["placed"] else None,
                "fa_per_hour": round(c["false_accepts"] / hours, 3),
            }
            for label, (t, c) in chosen.items()
        },
    }


def detection_report(
    model: StreamingModel,
    negatives: Negatives,
    positives: list[tuple[np.ndarray, str]],
    snrs: list[float | None],
    settings: DecisionSettings = DecisionSettings(),
    seed: int = 0,
) -> dict:
    """For each SNR: the positives spread over the negative streams, scored once, then counted
    at the model's own thresholds and over a sweep of one threshold for every label (DET); the
    negative streams alone are scored once for all."""
    conditions: list[dict] = []
    report = {
        "model": model.info.name,
        "model_version": model.info.version,
        "positives": len(positives),
        "negative_hours": round(negatives.hours, 3),
        "negative_hours_by_source": {k: round(v, 3) for k, v in negatives.hours_by_source().items()},
        "false_accepts_in": "the negative audio alone, at its recorded level, in 10-minute streams with state carried",
        "misses_in": "the negative audio brought to -30 dBFS",
        "tolerance_s": TOLERANCE,
        "conditions": conditions,
    }
    negative_scores = model.score(negatives.streams)
    for k, snr in enumerate(snrs):
        scored = scored_streams(model, negatives, positives, snr, seed + 1000 * k, negative_scores)
        counts = partial(count_detections, model, scored, settings)
        sweep = [{"threshold": t, **counts(dict.fromkeys(model.info.thresholds, t))} for t in SWEEP]
        conditions.append({"snr_db": snr, "at_model_thresholds": counts(), "det": sweep})
    return report


def read_negatives(folders: list[str], rate: float, stream_minutes: float = 10.0) -> Negatives:
    """Every audio file under each folder (recursively), at `rate` and its recorded level, joined
    in file order and cut into streams of `stream_minutes`."""
    size = int(stream_minutes * 60 * rate)
    negatives = Negatives([], [], rate)
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataError(f"--negatives {folder}: no audio files")
        audio = np.concatenate(list(read_many(files, rate).values()))
        streams = [audio[i : i + size] for i in range(0, len(audio), size)]
        streams = [s for k, s in enumerate(streams) if k == 0 or len(s) > size // 4]  # a short tail is left out
        negatives.streams += streams
        negatives.sources += [Path(folder).name] * len(streams)
    return negatives


def markdown(report: dict) -> str:
    at_thresholds = report["conditions"][0]["at_model_thresholds"]
    hours = report["negative_hours_by_source"]
    sources = ", ".join(
        f"{source} {n:.2f} ({hours[source]:.2f} h)" for source, n in at_thresholds["fa_per_hour_by_source"].items()
    )
    lines = [
        f"# {report['model']} {report['model_version']}: detection on continuous audio",
        "",
        f"False accepts: {at_thresholds['false_accepts']} in {report['negative_hours']:.2f} h of negative audio, "
        f"**{at_thresholds['fa_per_hour']:.2f} per hour** ({sources}), counted in {report['false_accepts_in']}.",
        "",
        f"Misses: {report['positives']} keywords placed in {report['misses_in']}; a hit is a detection of the "
        f"right label ending within the keyword or {report['tolerance_s']} s after it.",
        "",
        "| SNR | false rejects | latency after clip end, median (ms) | p95 (ms) |",
        "|---|---|---|---|",
    ]
    for c in report["conditions"]:
        row = c["at_model_thresholds"]
        lat = row["latency_ms"] or {"median": "-", "p95": "-"}
        snr = "clean" if c["snr_db"] is None else f"{c['snr_db']:g} dB"
        lines.append(f"| {snr} | {row['frr']:.3f} | {lat['median']} | {lat['p95']} |")
    return (
        "\n".join(lines)
        + "\n\n(at the thresholds in the model's metadata; det.png sweeps one threshold for all labels)\n"
    )


def det_png(report: dict, path) -> None:
    """False-reject rate against false accepts per hour, a curve per SNR (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(6, 4.5))
    floor = 0.5 / report["negative_hours"]  # where zero false accepts is drawn on a log axis
    for c in report["conditions"]:
        points = sorted((max(r["fa_per_hour"], floor), r["frr"]) for r in c["det"])
        ax.plot(*zip(*points), marker=".", label="clean" if c["snr_db"] is None else f"{c['snr_db']:g} dB SNR")
    ax.set_xscale("log")
    ticks = [floor, *(t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if t > 1.5 * floor)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "0" if x == floor else f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"false accepts per hour ({report['negative_hours']:.2f} h of negatives; zero drawn at {floor:.2f})")
    ax.set_ylabel("false-reject rate")
    ax.set_title(f"{report['model']} {report['model_version']}: DET, {report['positives']} keywords")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
