"""Service configuration: a TOML file, then command-line flags on top (flags win).

Unknown keys, wrong types and impossible values stop start-up with one line naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn.addresses import DEFAULT_PUBLISH, address_problem, is_loopback
from streamrnn.contract import DEVICES, is_threshold
from streamrnn.decision import DecisionSettings
from streamrnn.ingest_format import IngestLimits
from streamrnn.keys import KeyFileError, client_keys_in, read_key
from streamrnn.service.capture import CaptureConfig
from streamrnn.service.metrics import MetricsError, parse_address
from streamrnn.settings import SettingsError, build, read_toml

DEFAULT_CONFIG = Path("/etc/streamrnn/streamrnn.toml")


class ConfigError(SettingsError):
    """A configuration that cannot start the service."""


@dataclass
class ServedModel:
    """One [[models]] entry: a model the service serves, with its own overrides."""

    model: str  # bundled/installed name or .onnx path
    thresholds: dict[str, float] = field(default_factory=dict)  # per-label overrides
    smoothing: int = 0  # 0: the [decision] table's
    patience: int = 0
    refractory: float = -1.0
    # quiet chunks under this level (dBFS) are not run once gate_settle seconds of quiet have
    # (streamrnn.runtime.Gate); 0: every chunk runs
    gate_dbfs: float = 0.0
    gate_settle: float = 0.5


@dataclass
class DecisionConfig:
    """The [decision] table; defaults are DecisionSettings' (smoothing and patience 0: each
    model's own, from its contract file)."""

    smoothing: int = DecisionSettings.smoothing  # frames averaged
    patience: int = DecisionSettings.patience  # consecutive smoothed frames at or above threshold
    refractory: float = DecisionSettings.refractory  # seconds a label stays silent after firing


@dataclass
class IngestConfig(IngestLimits):
    """The [ingest] table: the message limits, and what each ingest source allows its senders."""

    idle_timeout: float = 30.0  # seconds without frames before a remote stream expires
    max_streams: int = 1000  # live streams per ingest source; messages starting more are refused
    max_speed: float = 20.0  # seconds of signal per second a stream may send, sustained
    burst_seconds: float = 120.0  # seconds of signal a stream may send ahead of that
    sender_speed: float = 300.0  # seconds of signal per second one sender (a peer) may send over all its streams
    sender_burst: float = 300.0  # seconds of signal a sender may send ahead of that (half the input)


@dataclass
class SecurityConfig:
    """The [security] table: CURVE for the event socket and ingest (`streamrnn keys`)."""

    server_key: str = ""  # the service's secret key file (NAME.key_secret)
    clients: str = ""  # folder of the public keys (*.key) of clients let in
    insecure: bool = False  # bind addresses other machines reach without CURVE


@dataclass
class WyomingConfig:
    """The [wyoming] table: what the Wyoming sources (wyoming:tcp://HOST:PORT) do besides serving."""

    zeroconf: str = ""  # a name to announce over mDNS, so Home Assistant discovers it; empty: none
    first_event_timeout: float = 10.0  # seconds a new connection has to send its first event
    read_timeout: float = 10.0  # seconds an event that began has to arrive whole (a partial line)
    idle_timeout: float = 300.0  # seconds a connection may go without an event


@dataclass
class MicConfig:
    rate: float = 0.0  # capture rate; 0: the device's default
    block_ms: float = 20.0  # samples per callback
    retry_max: float = 30.0  # seconds between reconnection attempts at most


AT_START = {"at_start": True}  # field metadata: read at start only, kept as it was on reload


@dataclass
class ServiceConfig:
    models: list[ServedModel] = field(default_factory=list, metadata={"table": ServedModel})
    # source specs, as `streamrnn.service.sources.open_source` reads them
    sources: list[str] = field(default_factory=list, metadata=AT_START)
    publish: str = field(default=DEFAULT_PUBLISH, metadata=AT_START)
    thresholds: dict[str, float] = field(default_factory=dict)  # per label, for every model that has it
    fast: bool = field(default=False, metadata=AT_START)  # file sources as fast as possible instead of real time
    stdin_rate: int = field(default=16000, metadata=AT_START)  # sample rate of raw 16-bit PCM on stdin
    device: str = field(default="cpu", metadata={**AT_START, "choices": DEVICES})
    threads: int = field(default=1, metadata=AT_START)  # onnxruntime threads per model
    log_level: str = field(default="info", metadata={**AT_START, "choices": ("debug", "info", "warning", "error")})
    heartbeat: float = 5.0  # seconds between heartbeats
    status_interval: float = 30.0  # seconds between status events (also on every change of note)
    scores_rate: float = 0.0  # scores.<stream> events per second per stream; 0: off
    send_hwm: int = field(default=1000, metadata=AT_START)  # events queued per subscriber before drops
    # live topic subscriptions on the event socket; more are refused
    max_subscriptions: int = field(default=10000, metadata=AT_START)
    # seconds a new ZeroMQ connection has to complete its handshake
    handshake_timeout: float = field(default=5.0, metadata=AT_START)
    metrics: str = field(default="", metadata=AT_START)  # HOST:PORT to serve Prometheus metrics on; empty: none
    instance: str = field(default="", metadata=AT_START)  # the name events carry as `instance`; empty: HOST:PID
    # seconds to wait for a first subscriber before reading sources
    wait_subscriber: float = field(default=0.0, metadata=AT_START)
    # seconds of signal and megabytes of samples waiting for the loop, all sources together; each live
    # source (mic, ingest, Wyoming) may hold an equal share, files and stdin one share together
    input_seconds: float = field(default=600.0, metadata=AT_START)
    input_mb: float = field(default=128.0, metadata=AT_START)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig, metadata=AT_START)
    mic: MicConfig = field(default_factory=MicConfig, metadata=AT_START)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig, metadata=AT_START)
    capture: CaptureConfig = field(default_factory=CaptureConfig, metadata=AT_START)
    security: SecurityConfig = field(default_factory=SecurityConfig, metadata=AT_START)
    source: str = field(default="defaults", metadata={"internal": True})

    @classmethod
    def at_start_only(cls) -> tuple[str, ...]:
        """The settings a reload leaves as they were (sockets, sources, devices, limits)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("at_start"))

    def thresholds_for(self, model: ServedModel, labels: tuple[str, ...]) -> dict[str, float]:
        """The thresholds a model is served with: the top-level ones of its labels, then its own."""
        return {label: v for label, v in self.thresholds.items() if label in labels} | model.thresholds

    def decision_for(self, model: ServedModel) -> DecisionSettings:
        """The [decision] table with a model's own overrides on top."""
        d = self.decision
        return DecisionSettings(
            model.smoothing or d.smoothing,
            model.patience or d.patience,
            d.refractory if model.refractory < 0 else model.refractory,
        )


def check(config: ServiceConfig) -> ServiceConfig:
    """Refuse impossible values: every problem found, one line each naming its key."""
    problems: list[str] = []

    def need(ok: bool, key: str, problem: str):
        if not ok:
            problems.append(f"{config.source}: {key} {problem}")

    need(bool(config.models), "models", "is empty: give at least one model (--model NAME|PATH)")
    need(bool(config.sources), "sources", "is empty: give at least one source (--source FILE|-|mic|pull:ADDR)")
    for label, value in config.thresholds.items():
        need(is_threshold(value), f"thresholds.{label}", f"= {value} is outside [0, 1]")
    for i, m in enumerate(config.models):
        for label, value in m.thresholds.items():
            need(is_threshold(value), f"models[{i}].thresholds.{label}", f"= {value} is outside [0, 1]")
        need(m.smoothing >= 0 and m.patience >= 0, f"models[{i}]", "smoothing and patience must be >= 0")
        need(m.gate_dbfs <= 0, f"models[{i}].gate_dbfs", f"= {m.gate_dbfs} must be below 0 dBFS (0: off)")
        need(m.gate_settle > 0, f"models[{i}].gate_settle", f"= {m.gate_settle} must be positive")
    d = config.decision
    need(d.smoothing >= 0, "decision.smoothing", f"= {d.smoothing} must not be negative (0: each model's own)")
    need(d.patience >= 0, "decision.patience", f"= {d.patience} must not be negative (0: each model's own)")
    need(d.refractory >= 0, "decision.refractory", f"= {d.refractory} must not be negative")
    need(config.threads >= 1, "threads", f"= {config.threads} must be at least 1")
    need(config.heartbeat > 0, "heartbeat", f"= {config.heartbeat} must be positive")
    need(config.status_interval > 0, "status_interval", f"= {config.status_interval} must be positive")
    need(config.scores_rate >= 0, "scores_rate", f"= {config.scores_rate} must not be negative")
    need(config.input_seconds > 0 and config.input_mb > 0, "input_seconds", "and input_mb must be positive")
    need(config.send_hwm >= 1, "send_hwm", f"= {config.send_hwm} must be at least 1")
    need(config.max_subscriptions >= 1, "max_subscriptions", f"= {config.max_subscriptions} must be at least 1")
    need(config.handshake_timeout > 0, "handshake_timeout", f"= {config.handshake_timeout} must be positive")
    need(1 <= config.stdin_rate <= config.ingest.max_rate, "stdin_rate", f"= {config.stdin_rate} is not a usable rate")
    g = config.ingest
    need(g.idle_timeout > 0, "ingest.idle_timeout", "must be positive")
    need(0 < g.min_sensor_rate <= g.max_rate, "ingest.min_sensor_rate", "must be positive and at most max_rate")
    need(0 < g.min_audio_rate <= g.max_rate, "ingest.min_audio_rate", "must be positive and at most max_rate")
    need(g.max_message_bytes >= 1024, "ingest.max_message_bytes", f"= {g.max_message_bytes} must be at least 1024")
    need(g.max_message_seconds > 0, "ingest.max_message_seconds", "must be positive")
    need(g.max_streams >= 1, "ingest.max_streams", f"= {g.max_streams} must be at least 1")
    need(g.max_speed >= 1, "ingest.max_speed", f"= {g.max_speed} must be at least 1 (real time)")
    need(g.burst_seconds >= 0, "ingest.burst_seconds", "must not be negative")
    need(g.sender_speed >= 1, "ingest.sender_speed", f"= {g.sender_speed} must be at least 1 (real time)")
    need(g.sender_burst >= 0, "ingest.sender_burst", "must not be negative")
    w = config.wyoming
    for key in ("first_event_timeout", "read_timeout", "idle_timeout"):
        need(getattr(w, key) > 0, f"wyoming.{key}", "must be positive")
    need(config.mic.block_ms > 0 and config.mic.rate >= 0, "mic", "block_ms must be positive and rate not negative")
    cap = config.capture
    need(cap.before >= 0 and cap.after >= 0, "capture", "before and after must not be negative")
    need(cap.max_mb > 0 and cap.queue >= 1, "capture", "max_mb must be positive and queue at least 1")
    if cap.dir and (Path(cap.dir).exists() and not Path(cap.dir).is_dir()):
        need(False, "capture.dir", f"{cap.dir} is not a folder")
    need(sum(s == "-" for s in config.sources) <= 1, "sources", "names stdin (-) more than once")
    levels = ("debug", "info", "warning", "error")
    need(config.log_level in levels, "log_level", f"= {config.log_level!r} is not one of {', '.join(levels)}")
    need(config.device in DEVICES, "device", f"= {config.device!r} is not one of {', '.join(DEVICES)}")
    bound = bound_addresses(config)
    for key, address in bound:
        need((problem := address_problem(address)) is None, key, f"{address!r} {problem}")
    wyoming = [s.partition(":")[2] for s in config.sources if s.startswith("wyoming:")]
    for address in wyoming:
        ok = address.startswith("tcp://") and address_problem(address) is None
        need(ok, "sources", f"wyoming:{address} is not tcp://HOST:PORT")
    every = [a for _, a in bound] + wyoming
    for address in {a for a in every if every.count(a) > 1}:
        need(False, "publish/sources", f"bind {address} more than once")
    if config.metrics:
        try:
            parse_address(config.metrics)
        except MetricsError as exc:
            need(False, "metrics", str(exc).removeprefix("metrics "))
    _check_security(config, need)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def bound_addresses(config: ServiceConfig) -> list[tuple[str, str]]:
    """(key, address) of every socket the service binds: publish and each ingest source."""
    ingest = [s for s in config.sources if s.startswith(("pull:", "sub:"))]
    return [("publish", config.publish)] + [("sources", s.partition(":")[2]) for s in ingest]


def _check_security(config: ServiceConfig, need) -> None:
    sec = config.security
    need(bool(sec.server_key) == bool(sec.clients), "security", "server_key and clients go together (CURVE)")
    if config.metrics and not sec.insecure:  # metrics have no login: other machines only when said so
        need(
            is_loopback(f"tcp://{config.metrics}") or ":" not in config.metrics,
            "metrics",
            f"{config.metrics} is reachable from other machines and has no login: [security] insecure = true",
        )
    if sec.server_key:
        try:
            read_key(sec.server_key, secret=True)
            client_keys_in(Path(sec.clients))
        except KeyFileError as exc:
            need(False, "security", str(exc))
        return
    for key, address in bound_addresses(config):
        need(
            sec.insecure or is_loopback(address) or address_problem(address) is not None,
            key,
            f"{address} is reachable from other machines: set [security] server_key and clients "
            "(streamrnn keys) or insecure = true",
        )


def config_path(path: str | Path | None) -> Path | None:
    """The config file in force: the one given, else the default one when it exists."""
    return Path(path) if path else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)


def load_config(path: str | Path | None, overrides: dict) -> ServiceConfig:
    """Read the config file (if any), apply flag overrides, check the result.

    `overrides` holds flag values; None means "not given". `models` and `sources` given as flags
    replace the file's lists.
    """
    path = config_path(path)
    config = (
        build(ServiceConfig, read_toml(path, ConfigError), str(path), error=ConfigError) if path else ServiceConfig()
    )
    config.source = str(path) if path else "command line"
    for key, value in overrides.items():  # "decision.smoothing" sets a key of a table
        if value is None:
            continue
        if key == "models":
            value = [ServedModel(m) for m in value]
        *tables, name = key.split(".")
        target = config
        for table in tables:
            target = getattr(target, table)
        if name not in {f.name for f in dataclasses.fields(target)}:
            raise ValueError(f"no such setting {key}")
        setattr(target, name, value)
    return check(config)
