"""Detection on continuous audio: keyword placement, SNR, and the end-to-end `eval --detect`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import DATA_ROOT, ROOT, STREAMRNN, clip, needs_data
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.evaluation.detection import (
    NEGATIVE_RMS,
    compose,
    count_detections,
    read_negatives,
    scored_streams,
    trim_silence,
)
from streamrnn.runtime import StreamingModel


def test_compose_places_keywords_apart_at_the_asked_snr():
    rng = np.random.default_rng(0)
    negative = (rng.normal(size=16000 * 60) * 0.05).astype(np.float32)
    positives = [(clip(w), w) for w in ("yes", "no", "up", "down")]
    audio, placed = compose(negative, positives, 16000, 10.0, seed=3)
    assert len(audio) == len(negative) and [p.label for p in placed] == ["yes", "no", "up", "down"]
    for a, b in zip(placed, placed[1:]):
        assert b.start - a.end >= 2.0  # the gap
    for p in placed:
        span = slice(round(p.start * 16000), round(p.end * 16000))
        scaled = negative * (NEGATIVE_RMS / np.sqrt(np.mean(negative**2)))
        added = audio[span] - scaled[span]
        ratio = 20 * np.log10(np.sqrt(np.mean(added**2)) / NEGATIVE_RMS)
        assert ratio == pytest.approx(10.0, abs=0.2)
    clean, placed = compose(negative, positives, 16000, None, seed=3)
    first = placed[0]
    assert np.array_equal(
        clean[round(first.start * 16000) : round(first.end * 16000)], trim_silence(positives[0][0], 16000)
    )
    with pytest.raises(ValueError, match="too short"):
        compose(negative[: 16000 * 5], positives, 16000, None, seed=0)


@needs_data
def test_eval_detect_reports_frr_fa_per_hour_latency_and_det(tmp_path):
    for word in ("yes", "no", "up", "down"):
        (tmp_path / "clips" / word).mkdir(parents=True)
        for i in range(3):  # the same held-out clip three times, placed at different spots
            (tmp_path / "clips" / word / f"{i}.flac").symlink_to(next((ROOT / "tests" / "data").glob(f"{word}_*.flac")))
    done = subprocess.run(
        STREAMRNN
        + [
            "eval",
            "--model",
            "commands",
            tmp_path / "clips",
            "--detect",
            "--negatives",
            DATA_ROOT / "noise",
            "--snr",
            "clean",
            "--snr",
            "0",
            "--json",
            "--out",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["positives"] == 12 and 0.1 < report["negative_hours"] < 0.2  # about 9 minutes of noise
    clean, noisy = report["conditions"]
    assert clean["snr_db"] is None and noisy["snr_db"] == 0
    assert clean["at_model_thresholds"]["frr"] <= 0.5
    assert clean["at_model_thresholds"]["latency_ms"]["median"] < 1000
    for condition in report["conditions"]:
        # from the lowest threshold to the highest, false accepts fall and false rejects rise (not
        # strictly step by step: a run above a threshold can split in two above a higher one)
        det = condition["det"]
        assert [p["threshold"] for p in det] == sorted(p["threshold"] for p in det)
        assert det[0]["false_accepts"] > det[-1]["false_accepts"] and det[0]["frr"] < det[-1]["frr"]
    assert (tmp_path / "out" / "det.png").stat().st_size > 1000
    assert "| clean |" in (tmp_path / "out" / "detection.md").read_text()


def test_false_accepts_are_counted_in_the_negatives_alone_at_their_recorded_level(tmp_path):
    """Words in the negative audio fire as a service would hear them (each folder one stream at its
    recorded level), counted once per folder; the keywords placed in the same audio only count hits."""
    gap = np.zeros(16000 * 3, np.float32)
    talk = np.concatenate([x for w in ("yes", "no", "down") for x in (gap, clip(w))] + [gap] * 10)
    for name, level in (("talk", 1.0), ("whisper", 0.01)):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.flac", talk * level, 16000)
    model = StreamingModel(ROOT / "streamrnn" / "models" / "commands.onnx")
    negatives = read_negatives([str(tmp_path / "talk"), str(tmp_path / "whisper")], 16000)
    assert negatives.sources == ["talk", "whisper"] and negatives.hours == pytest.approx(2 * len(talk) / 16000 / 3600)
    counts = count_detections(
        model, scored_streams(model, negatives, [(clip("up"), "up")], None, 0), DecisionSettings()
    )
    heard = [len(Decider(model.info).update(s)) for s in model.score(negatives.streams)]
    assert heard[0] >= 2 and heard[1] < heard[0]  # the words fire at their level, not 40 dB below
    assert counts["frr"] == 0 and counts["false_accepts"] == sum(heard)  # the placed stream's words not again
    assert counts["fa_per_hour_by_source"]["talk"] == pytest.approx(heard[0] / (negatives.hours / 2), abs=0.01)
