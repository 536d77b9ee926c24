"""Recipes: a TOML file read into typed, checked settings (torch-free; training and `streamrnn eval` read it).

Unknown keys, wrong types and impossible values stop with one line naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from streamrnn.recipe.datasets import audio_sets, default_data_root
from streamrnn.settings import SettingsError, build, read_toml

ENGINES = ("espeak-ng", "flite", "piper", "pico", "rhvoice", "festival", "mbrola", "kokoro")  # synthetic speech
SENTENCE_TEXTS = "/usr/share/common-licenses"  # English prose on every Debian system
TEACHER_RATE, TEACHER_HOP = 16000, 1280  # training/teacher.py: an embedding every 80 ms at 16 kHz


class RecipeError(SettingsError):
    """A recipe that cannot be used; the message names the file and key."""


def whole_frames(seconds: float, rate: float, hop: int) -> int:
    """Samples of `seconds` at `rate`, rounded up to whole frames of `hop` samples: the length of
    a training clip (Recipe.clip_samples), and so the length `streamrnn eval` centres clips in."""
    return -(-round(seconds * rate) // hop) * hop


def encoder_path(encoder_file: str) -> Path:
    """model.encoder_file as a path: a bare file name of a bundled student (training/encoders)
    names that one, anything else is a path."""
    bundled = Path(str(files("streamrnn.training"))) / "encoders" / encoder_file
    return bundled if Path(encoder_file).name == encoder_file and bundled.is_file() else Path(encoder_file)


def choice(default: str, *others: str):
    return field(default=default, metadata={"choices": (default, *others)})


@dataclass
class ExtraData:
    """Another folder of clips for the same labels, e.g. a second corpus; split the same way."""

    path: str  # under data.root, or absolute (~ allowed)
    layout: str = choice("folders", "speech_commands", "files", "tree")
    label_regex: str = ""
    label_map: dict[str, str] = field(default_factory=dict)
    group_regex: str = ""
    label: str = ""  # every file label_regex (or layout tree) selects gets this label
    max_clips: int = 0  # 0: all; else a fixed subset of this source
    max_per_label: int = 0  # 0: data.max_per_label; else a fixed subset of each label of this source
    train_only: bool = False  # never in validation or test (like synthetic speech)
    repeat: int = 1  # copies of each clip in its split (each augmented on its own): weight for a few clips


@dataclass
class DataConfig:
    root: str = ""  # data root (relative: from the working dir); "": $STREAMRNN_DATA or the user's data folder
    optional: bool = False  # folders under the root that are missing (Speech Commands, noise) are skipped, said once
    path: str = ""  # dataset folder (or .ts file) under the root
    test_path: str = ""  # a separate test set under the root (then `test` is unused)
    layout: str = choice("folders", "speech_commands", "files", "tree", "ts", "csv")
    label: str = ""  # layouts files and tree: the one label of every file
    kind: str = choice("audio", "sensor")
    labels: list[str] = field(default_factory=list)  # empty: every label folder found
    background_label: str = ""  # the label that means "nothing"; required
    unreported: list[str] = field(default_factory=list)  # labels given no threshold: never reported
    sample_rate: int = 16000
    channels: int = 1  # sensor channels
    clip_seconds: float = 1.0  # every example is padded or cut to this length
    group_regex: str = ""  # captures the speaker/recording in a file name
    label_regex: str = ""  # layout files: captures the label in a file name
    label_map: dict[str, str] = field(default_factory=dict)  # renames captured labels
    noise_clips: int = 0  # extra background-label clips cut from the noise folder
    extra: list[ExtraData] = field(default_factory=list, metadata={"table": ExtraData})  # [[data.extra]]
    validation: float = 0.1  # share of groups held out for validation
    test: float = 0.1  # share of groups held out for testing
    validation_groups: list[str] = field(default_factory=list)  # named instead of hashed
    test_groups: list[str] = field(default_factory=list)
    max_per_label: int = 0  # 0: all
    noise: str = "noise"  # folder of background noise under the root ("" for none)


@dataclass
class ModelConfig:
    cell: str = choice("gru", "lstm", "rnn")
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.0
    context_frames: int = 0  # 0: none; else a causal convolution over this many frames before the RNN
    encoder: str = choice("", "teacher", "student")  # a speech encoder (80-ms frames) replaces the log-mel: the
    # pretrained "teacher" or the "student" distilled from it (cheaper)
    encoder_file: str = ""  # a student checkpoint: a bundled one's file name (training/encoders) or a path
    # (from `streamrnn distill`); "": the bundled student.pt
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 20.0
    f_max: float = 0.0  # 0: half the sample rate
    chunk: int = 8  # frames per call of the exported model
    window: int = field(default=0, metadata={"internal": True})  # derived: samples
    hop: int = field(default=0, metadata={"internal": True})  # derived: samples


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    encoder_lr: float = 0.0  # >0: the student encoder is fine-tuned at this rate (cosine like lr); 0: frozen
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    clips_per_sequence: int = 3  # clips joined into one stream, state carried between them
    tbptt_frames: int = 0  # truncated BPTT segment (frames); 0: one clip
    target: str = choice("clip", "frame")  # clip: max-pooling readout; frame: every frame labelled
    early_stop: int = 6  # epochs without validation gain before stopping
    device: str = choice("auto", "cpu", "cuda")
    out_dir: str = "runs/{name}"
    threads: int = 0  # torch CPU threads; 0: torch's default
    target_fa_per_hour: float = 0.0  # >0: thresholds for this false-accept rate on validation streams
    validation_negatives: list[str] = field(default_factory=list)  # folders of long audio never trained on, where
    # those thresholds are picked (default: the validation split's background clips)


@dataclass
class AugmentConfig:
    noise_prob: float = 0.0
    snr_min: float = 0.0
    snr_max: float = 20.0
    gain_db: float = 0.0  # random gain within +-gain_db
    shift_seconds: float = 0.0  # random time shift within +-shift_seconds
    speed_prob: float = 0.0
    speed_range: float = 0.1  # speed factor in [1-r, 1+r]
    pitch_prob: float = 0.0
    pitch_semitones: float = 2.0
    reverb_prob: float = 0.0
    rt60_max: float = 0.6  # seconds, generated room impulse responses
    freq_masks: int = 0  # SpecAugment masks per example
    freq_mask_width: int = 5
    time_masks: int = 0
    time_mask_width: int = 10
    background: list[str] = field(default_factory=list)  # folders of long audio also mixed in as noise


@dataclass
class SynthConfig:
    """Synthetic speech: each label's phrase in `per_label` voices (training split, and a
    `validation` share of voices where a label has no real recordings); for the reported phrases,
    background-label speech that is not them (see synth.py)."""

    per_label: int = 0  # 0: none
    engines: list[str] = field(default_factory=lambda: ["espeak-ng", "flite"])  # drawn evenly; listed twice: twice
    phrases: dict[str, str] = field(default_factory=dict)  # label -> text; default the label itself
    validation: float = 0.0  # share of voices held out for validation
    confusable_voices: int = 0  # voices per phonetically close non-phrase
    sentences: int = 0  # sentences without the phrases, each in its own voice
    near_words: int = 0  # dictionary words that sound nearest each phrase (training/near_words.py)
    near_word_voices: int = 0  # voices per near word: alone in half of them, inside a sentence in the rest
    sentence_texts: list[str] = field(default_factory=lambda: [SENTENCE_TEXTS])  # folders of English text
    cache: bool = True  # keep every clip in the user's cache (synth.py): resumed runs and other phrases reuse them


@dataclass
class Recipe:
    name: str
    version: str = "0.1.0"
    description: str = ""
    license: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    source: str = field(default="", metadata={"internal": True})  # where it came from

    @property
    def clip_samples(self) -> int:
        """Samples per training clip: clip_seconds rounded up to whole frames."""
        return whole_frames(self.data.clip_seconds, self.data.sample_rate, self.model.hop)

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir.format(name=self.name))

    def reported(self, labels: list[str]) -> list[str]:
        """The labels of `labels` that get a threshold: all but the background and `data.unreported`."""
        return [x for x in labels if x != self.data.background_label and x not in self.data.unreported]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(r: Recipe) -> None:
    def need(ok: bool, msg: str):
        if not ok:
            raise RecipeError(f"{r.source}: {msg}")

    need(bool(r.data.path), "data.path is required")
    need(bool(r.data.background_label), "data.background_label is required")
    need(
        not r.data.labels or r.data.background_label in r.data.labels,
        f"data.background_label {r.data.background_label!r} is not in data.labels",
    )
    need(
        not r.data.labels or set(r.data.unreported) <= set(r.data.labels),
        f"data.unreported {r.data.unreported} names labels not in data.labels",
    )
    need(
        0 <= r.data.validation < 1 and 0 <= r.data.test < 1 and r.data.validation + r.data.test < 1,
        "data.validation + data.test must be below 1",
    )
    need(r.data.sample_rate > 0 and r.data.clip_seconds > 0, "data.sample_rate and data.clip_seconds must be positive")
    need(
        r.model.hidden > 0 and r.model.layers > 0 and r.model.chunk > 0,
        "model.hidden, model.layers and model.chunk must be positive",
    )
    need(
        r.model.context_frames == 0 or r.model.context_frames >= 2,
        "model.context_frames must be 0 (none) or at least 2",
    )
    need(
        r.train.epochs > 0 and r.train.batch_size > 0 and r.train.lr > 0,
        "train.epochs, train.batch_size and train.lr must be positive",
    )
    need(r.train.clips_per_sequence > 0, "train.clips_per_sequence must be positive")
    for name in ("noise_prob", "speed_prob", "pitch_prob", "reverb_prob"):
        need(0 <= getattr(r.augment, name) <= 1, f"augment.{name} must be within [0, 1]")
    need(r.data.kind == "audio" or r.data.layout in ("ts", "csv"), "sensor data needs layout ts or csv")
    need(set(r.synth.engines) <= set(ENGINES), f"synth.engines {r.synth.engines}: {', '.join(ENGINES)} are known")
    need(0 <= r.synth.validation < 1, "synth.validation must be within [0, 1)")
    need(r.synth.near_word_voices > 0 or not r.synth.near_words, "synth.near_words needs synth.near_word_voices")
    need(r.train.target_fa_per_hour >= 0, "train.target_fa_per_hour must not be negative")
    need(
        not r.data.labels or set(r.synth.phrases) <= set(r.data.labels),
        f"synth.phrases names labels not in data.labels: {sorted(set(r.synth.phrases) - set(r.data.labels))}",
    )
    need(
        r.data.kind == "sensor" or r.data.layout in ("folders", "speech_commands", "files", "tree"),
        "audio data needs layout folders, speech_commands, files or tree",
    )
    need(
        r.data.layout != "tree" or (bool(r.data.label) and r.data.label in r.data.labels),
        "data.layout 'tree' needs data.label, one of data.labels",
    )
    need(all(x.layout != "tree" or x.label for x in r.data.extra), "[[data.extra]] with layout 'tree' needs label")
    need(all(x.repeat >= 1 for x in r.data.extra), "[[data.extra]] repeat must be at least 1")


def load_recipe(path: str | Path, data_root: str | None = None) -> Recipe:
    """Read and check a recipe; `data_root` overrides data.root."""
    table = read_toml(path, RecipeError)
    if "name" not in table:
        raise RecipeError(f"{path}: name is required")
    recipe = build(Recipe, table, str(path), error=RecipeError)
    recipe.source = str(path)
    if data_root:
        recipe.data.root = data_root
    return finish(recipe)


def finish(recipe: Recipe) -> Recipe:
    """Check a recipe and fill in its derived values (window and hop in samples, the data root,
    each `negatives:SET` as its packages' folders)."""
    _check(recipe)
    recipe.data.root = recipe.data.root or default_data_root()
    recipe.train.validation_negatives = audio_sets(recipe.train.validation_negatives)
    recipe.augment.background = audio_sets(recipe.augment.background)
    m, rate = recipe.model, recipe.data.sample_rate
    if recipe.train.encoder_lr and not (recipe.data.kind == "audio" and m.encoder == "student"):
        raise RecipeError(
            f'{recipe.source}: train.encoder_lr fine-tunes the student encoder: it needs model.encoder = "student"'
        )
    if m.encoder_file and not (recipe.data.kind == "audio" and m.encoder == "student"):
        raise RecipeError(
            f'{recipe.source}: model.encoder_file is a student checkpoint: it needs model.encoder = "student"'
        )
    if m.encoder_file and not encoder_path(m.encoder_file).is_file():
        raise RecipeError(
            f"{recipe.source}: model.encoder_file: {m.encoder_file}: no such file (make one: streamrnn distill)"
        )
    if recipe.data.kind == "audio" and m.encoder:
        if rate != TEACHER_RATE:
            raise RecipeError(f"{recipe.source}: model.encoder needs data.sample_rate = {TEACHER_RATE}")
        m.window = m.hop = TEACHER_HOP
    elif recipe.data.kind == "audio":
        m.window = round(m.window_ms * rate / 1000)
        m.hop = round(m.hop_ms * rate / 1000)
        if m.window < m.hop or m.hop < 1:
            raise RecipeError(f"{recipe.source}: model.window_ms must be at least model.hop_ms")
    else:
        m.window = m.hop = 1
    return recipe


def recipe_from_dict(values: dict) -> Recipe:
    """Rebuild a recipe saved in a checkpoint."""
    values = dict(values)
    source = values.pop("source", "checkpoint")
    for key in ("window", "hop"):
        values.get("model", {}).pop(key, None)
    recipe = build(Recipe, values, source, error=RecipeError)
    recipe.source = source
    return finish(recipe)
