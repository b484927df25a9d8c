"""All configuration in one typed object: `FACELENS_*` environment variables, then an optional
TOML file (path in `FACELENS_CONFIG`, default ./facelens.toml), then the defaults below."""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as UnparsedSetting

Detector = Literal["yunet", "centerface"]
Embedder = Literal["sface", "sface-flip", "dlib", "fusion"]
EMBEDDER_DIMS: dict[str, int] = {"sface": 128, "sface-flip": 128, "dlib": 128, "fusion": 256}
"""Every embedder and the length of its vectors: the one place their names live."""
assert set(EMBEDDER_DIMS) == set(get_args(Embedder)), "EMBEDDER_DIMS and Embedder disagree"
Runtime = Literal["openvino", "openvino-bf16", "onnxruntime"]


NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
"""Gallery and camera names: ASCII letters, digits, `_ . -`, not starting with a dot (so never
`.` or `..`), at most 100 characters. ASCII only: names appear in URLs, topics and logs,
where look-alike letters (Cyrillic а for Latin a) would name two things the same way."""


class WebhookConfig(BaseModel):
    url: str
    secret: str = Field(repr=False)
    """Signs each body (HMAC-SHA256, header X-Facelens-Signature); never logged."""


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Polygon = Annotated[list[tuple[Fraction, Fraction]], Field(min_length=3, max_length=50)]
"""A region of a camera's frame: 3 to 50 (x, y) corners as fractions of width and height."""


class CameraConfig(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=100)
    source: str = Field(min_length=1, max_length=2000)
    """An rtsp://, rtsps:// or http(s):// (MJPEG, HLS) stream, /dev/videoN, or a video file
    inside `media_dir` (video/source.py check_source)."""
    galleries: list[str] = []
    enabled: bool = True
    fps: float = Field(10.0, gt=0, le=60)
    motion: bool = False
    """Skip detection while nothing moves and no face is being tracked."""
    cooldown_s: float = Field(60.0, ge=0, le=86_400)
    """Seconds during which the camera does not alert again on the same person or entry; at
    most a day (the window's end is stored as a date: 1e308 or inf stopped the camera)."""
    far: float = Field(1e-3, ge=1e-5, le=1e-1)
    zones: list[Polygon] = Field(default_factory=list, max_length=20)
    """Where faces are watched (the whole frame when empty): polygons of (x, y) as fractions of
    the frame's width and height. Outside every zone the frame is blanked before detection."""
    masks: list[Polygon] = Field(default_factory=list, max_length=20)
    """Never looked at (a neighbour's window, a screen on the wall): blanked before detection,
    inside zones too."""
    scene: bool = False
    """Also run the street layer (people, vehicles, plates) on the same frames, alerting only
    on stored plate hotlist entries and description rules."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACELENS_", extra="ignore")

    data_dir: Path = Path("data")
    """Database, master key (unless FACELENS_MASTER_KEY is set) and index files live here."""
    database_url: str | None = None
    """SQLAlchemy URL; default: SQLite at data_dir/facelens.db. PostgreSQL works unchanged,
    e.g. postgresql+psycopg://user@127.0.0.1:5432/facelens."""
    milvus_uri: str | None = None
    """Search galleries in Milvus instead of the embedded index: a server URL
    (http://host:19530, a path names the Milvus database) or a milvus-lite file path (….db).
    Needs `pip install facelens[milvus]`. Sizing: docs/deployment-milvus.md."""
    milvus_consistency: Literal["Strong", "Bounded"] = "Strong"
    """Strong: a search sees every committed enrolment and delete, by any replica, but waits
    for the server's time tick (~0.37 s a search measured on a loaded 2.3.5 standalone);
    Bounded: ~0.01 s, may miss the last few seconds' changes."""
    detector: Detector = "yunet"
    embedder: Embedder = "fusion"
    """The default is the most accurate on lfw-dev at FAR 1e-3 and 1e-4 (see README)."""
    detect_threshold: float = Field(0.6, ge=0.05, le=0.99)
    detect_max_side: int = Field(1920, ge=320)
    """Images larger than this are scanned in overlapping tiles of this size, not shrunk,
    so a 40-px face in a 4K frame is still seen at its native size."""
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    runtime: Runtime = "openvino-bf16"
    """What runs SFace, all on the same folded graph: OpenVINO in bf16 where the CPU computes
    it natively (the default; fp32 elsewhere), OpenVINO in fp32, or onnxruntime (fp32). bf16
    scores sit ~1e-3 from fp32 ones, so each precision has its own calibrated thresholds
    (docs/decisions.md)."""
    min_interocular_px: float = 20.0
    min_sharpness: float = 25.0
    max_yaw: float = 40.0
    max_pitch: float = 30.0
    calibration_file: Path | None = None
    """Operating points to use instead of the ones saved in `calibration_dir` or shipped in
    the package (matching/calibration.py)."""
    fusion_weight: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the SFace score in the fused score (overwritten by calibration data)."""
    sface_shift_tta: bool = False
    """sface-flip (and fusion's SFace half) also averages the chip shifted 2 px four ways
    (vision/tta.py; eval lfw / identify and calibrate measure with it): ~3.5× the fusion
    embedder's CPU for +0.007 / +0.013 TAR at FAR 1e-3 / 1e-4 on lfw-dev made cctv-18, clean
    no worse (docs/decisions.md, "Verification"), so off."""

    # The REST service (facelens serve).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    attributes: bool = True
    """Whether /v1/analyze may estimate age and perceived sex."""
    max_body_mb: float = Field(10.0, gt=0)
    max_archive_mb: float = Field(500.0, gt=0)
    """Largest zip of people (one folder each) for bulk enrolment."""
    max_image_mp: float = Field(40.0, gt=0)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Inference threads of the service: one per core."""
    queue: int = Field(8, ge=0)
    """Requests that may wait for an inference thread; beyond that the API answers 429."""
    rate_per_minute: float = Field(600.0, gt=0)
    rate_burst: int = Field(60, ge=1)
    pixels_per_minute_mp: float = Field(1200.0, gt=0)
    """Decoded megapixels per key per minute (an upload is charged its header's size before
    it is decoded): ten 40 MP images in 15 KB cost what they cost, not ten requests."""
    pixel_burst_mp: float = Field(200.0, gt=0)
    probe_repeats: int = Field(20, ge=1)
    """Near-duplicate identify probes (same photo, small edits) per key within
    probe_window_s; more are refused with 429 (score hill-climbing)."""
    probe_window_s: float = Field(600.0, gt=0)
    lockout_failures: int = Field(5, ge=1)
    """Failed verifications of one subject by one key, within lockout_window_s, that lock
    the pair out for lockout_s."""
    lockout_window_s: float = 600.0
    lockout_s: float = 900.0
    purge_interval_h: float = Field(24.0, gt=0)

    # Cameras and event delivery.
    media_dir: Path | None = None
    """The folder whose video files cameras may play; no file source is accepted without it."""
    cameras: list[CameraConfig] = []
    """Seeded into the database at service start; then managed over /v1/cameras."""
    event_retention_days: float = Field(30.0, gt=0)
    """Unconfirmed (and suppressed) alerts are deleted after this long."""
    counts_retention_days: float = Field(90.0, gt=0)
    """Street counts (tracks per camera, class and minute: no one's data) are deleted after
    this long."""
    street_detect_side: int | None = Field(None, ge=160, le=1280, multiple_of=32)
    """The street detector's (NanoDet) input, longer side in pixels, the shorter one fitted to
    the frame's shape (scene/detect.py fitted_input); unset: NanoDet's own 416×416, the frame
    letterboxed into it. 512 finds more cars (recall 0.94 against 0.84) for more extra boxes;
    416 costs a third less CPU per 16:9 frame (docs/decisions.md, Street scenes)."""
    webhooks: list[WebhookConfig] = []
    mqtt_url: str | None = None
    """e.g. mqtt://127.0.0.1:1883: alerts go to <mqtt_prefix>/<camera>/events."""
    mqtt_prefix: str = "facelens"
    mqtt_snapshots: bool = False
    """Also publish each alert's best shot (JPEG, retained) to <mqtt_prefix>/<camera>/snapshot,
    as Frigate does. Off by default: it puts a face picture, unencrypted, on the broker."""

    # Scale-out (docs/deployment.md). Unset: one process, state in memory, no server needed.
    nats_url: str | None = None
    """nats://127.0.0.1:4222 (JetStream): camera leases for `facelens worker`s, gallery change
    announcements between API replicas, and the alert stream (outbox relay → delivery)."""
    redis_url: str | None = None
    """redis://127.0.0.1:6379/0: rate limits, lockouts and liveness sessions shared by API
    replicas (each process keeps its own in memory when unset)."""
    redis_prefix: str = Field("facelens", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    """Begins every Redis key facelens writes, so deployments or test runs sharing one Redis
    stay apart."""
    nats_prefix: str = Field("facelens", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    """Begins every NATS name facelens uses (KV buckets, streams, subjects), so deployments
    or test runs sharing one NATS server stay apart."""
    lease_ttl_s: float = Field(3.0, gt=0)
    """A camera's lease ends this long after its worker last renewed it (every third of it):
    a worker that dies loses its cameras to the others within about this (docs/decisions.md)."""
    camera_rescan_s: float = Field(5.0, gt=0)
    """How often workers re-read the cameras table, besides acting on change messages."""

    @property
    def calibration_dir(self) -> Path:
        """Where `facelens eval lfw ROOT --save` writes operating points and measured accuracy,
        and where the engine looks for them before the package's."""
        return self.data_dir / "calibration"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("FACELENS_CONFIG", "facelens.toml"))
        return (init_settings, env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=toml_path))


class SettingRefused(ValueError):
    """A setting's value is refused: the message is one line naming the variable (or the
    config file's key) and what is allowed, never the value (it may be a password)."""

    exit_code = 2


def _named(field: str) -> str:
    """Where `field`'s value came from: its FACELENS_* variable when set (the environment
    wins over the file), else its key in the config file."""
    variable = f"FACELENS_{field.upper()}"
    if any(name.upper() == variable for name in os.environ):
        return variable
    return f"{field} in {os.environ.get('FACELENS_CONFIG', 'facelens.toml')}"


def _refused(e: ValidationError | UnparsedSetting) -> SettingRefused:
    """pydantic's many-line report as one line: the first refused setting, and how many more
    there are."""
    if isinstance(e, UnparsedSetting):  # a JSON value (cameras, webhooks) that does not parse
        field = found.group(1) if (found := re.search(r'field "(\w+)"', str(e))) else "?"
        return SettingRefused(f"{_named(field)}: not valid JSON for this setting")
    first = e.errors()[0]
    field, *inside = (str(part) for part in first["loc"])
    where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in inside)
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return SettingRefused(f"{_named(field)}{where}: {first['msg']}{more}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of the environment and the config file; SettingRefused (one line) when a
    value is not allowed."""
    try:
        return Settings()
    except (ValidationError, UnparsedSetting) as e:
        raise _refused(e) from None
    except tomllib.TOMLDecodeError as e:  # its message says where, never a value
        config = os.environ.get("FACELENS_CONFIG", "facelens.toml")
        raise SettingRefused(f"{config} is not valid TOML: {e}") from None
