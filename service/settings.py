"""Service settings from `DCPSFR_*` environment variables (pydantic-settings).

Two tiers: the essential settings (model config, data dir, weights dir, device, API keys) come first in
`python -m service --help` and the docs; every other setting is tuning, grouped by what it tunes (GROUPS).
An unknown DCPSFR_* variable is a typo until shown otherwise: `unknown_variables` names the closest real one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.records.shifts import DEFAULT_SHIFTS, parse_shifts, parse_timezone

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
PREFIX = "DCPSFR_"
MAX_INT_SETTING = 2**53  # counts and sizes beyond this overflow C sizes (a deque's maxlen, ...): refused at start
GROUPS = {
    "essential": "what every deployment sets or checks",
    "runtime": "how the model runs",
    "limits": "what one request may send",
    "batching": "the model queue and shutdown",
    "thresholds": "calibration and operator feedback",
    "regions": "defect regions",
    "records": "the inspection records and the frame archive",
    "replicas": "replicas sharing one data dir",
    "observability": "metrics and logs",
}
# DCPSFR_* variables that are not the service's settings, and whose they are
OTHER_VARIABLES = {
    "DCPSFR_CLIENT_URL": "the camera client's service URL",
    "DCPSFR_CLIENT_API_KEY": "the camera client's API key",
    "DCPSFR_METRICS_API_KEY": "docker-compose's key for Prometheus",
    "DCPSFR_PORT": "docker-compose's published port",
}
RENAMED = {"DCPSFR_API_KEY": "DCPSFR_CLIENT_API_KEY", "DCPSFR_URL": "DCPSFR_CLIENT_URL"}  # the client's old names


def group(name: str) -> dict[str, Any]:
    """A field's `json_schema_extra`: which GROUPS entry it belongs to."""
    assert name in GROUPS, name
    return {"group": name}


class Settings(BaseSettings):
    """Every field reads the environment variable `DCPSFR_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, case_sensitive=False, extra="ignore", populate_by_name=True, protected_namespaces=()
    )

    # --- essential ---------------------------------------------------------------------------------------------
    model_config_name: str = Field(
        "edge",
        validation_alias="DCPSFR_MODEL_CONFIG",
        description="named detector config (paper, edge, tiny) or a path to a JSON config",
        json_schema_extra=group("essential"),
    )
    data_dir: Path = Field(
        Path("data"),
        description="product references live in DATA_DIR/products/<id>/",
        json_schema_extra=group("essential"),
    )
    weights_dir: Path = Field(
        Path("weights"), description="folder with backbone and heads weight files", json_schema_extra=group("essential")
    )
    device: str = Field(
        "auto",
        description="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...",
        json_schema_extra=group("essential"),
    )
    keys_file: Path | None = Field(
        None,
        description="the API keys file (YAML or JSON: name, role, sha256 of each key; python -m service.keys add); "
        "without it and API_KEYS: no authentication (loopback only)",
        json_schema_extra=group("essential"),
    )
    api_keys: str = Field(
        "",
        description="deprecated: comma-separated API keys, each an admin named key-1, key-2, ... (use KEYS_FILE)",
        json_schema_extra=group("essential"),
    )
    allow_anonymous: bool = Field(
        False,
        description="true: serve without API keys on a non-loopback address (logged as a warning)",
        json_schema_extra=group("essential"),
    )
    # --- runtime -----------------------------------------------------------------------------------------------
    random_init: bool = Field(
        False,
        description="real-size random weights, for timing only: results mean nothing",
        json_schema_extra=group("runtime"),
    )
    runtime: Literal["torch", "openvino", "onnxruntime", "openvino-int8", "openvino-bf16"] = Field(
        "torch",
        description="what runs the frozen backbones: torch, or on the CPU openvino / onnxruntime (faster, fp32), "
        "openvino-int8 (int8 quantized), openvino-bf16 (CPUs with native bf16 only)",
        json_schema_extra=group("runtime"),
    )
    runtime_cache_dir: Path | None = Field(
        None,
        description="ONNX exports and int8 models for openvino* / onnxruntime (default: WEIGHTS_DIR/runtime-cache)",
        json_schema_extra=group("runtime"),
    )
    compile: Literal["off", "compile", "cudagraphs"] = Field(
        "off",
        description="torch runtime: torch.compile (static shapes) or CUDA graphs; off = eager",
        json_schema_extra=group("runtime"),
    )
    device_cache_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="device memory for cached per-product tensors (LRU); evicted ones reload",
        json_schema_extra=group("runtime"),
    )
    # --- limits ------------------------------------------------------------------------------------------------
    max_upload_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest request body in bytes", json_schema_extra=group("limits")
    )
    max_pixels: int = Field(
        50_000_000,
        ge=1,
        description="largest image (width x height), checked before decoding",
        json_schema_extra=group("limits"),
    )
    max_images_per_request: int = Field(
        16, ge=1, description="most images in one POST /inspect", json_schema_extra=group("limits")
    )
    max_request_pixels: int = Field(
        100_000_000,
        ge=1,
        description="most pixels (width x height summed over images) in one request, from headers",
        json_schema_extra=group("limits"),
    )
    decode_concurrency: int = Field(
        2,
        ge=1,
        description="images decoded (and results encoded) at once, over all requests",
        json_schema_extra=group("limits"),
    )
    max_references: int = Field(
        16, ge=1, le=16, description="most reference images per product upload", json_schema_extra=group("limits")
    )
    # --- batching ----------------------------------------------------------------------------------------------
    max_batch_size: int = Field(
        8, ge=1, description="most images in one model forward", json_schema_extra=group("batching")
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="how long the worker waits to fill a batch", json_schema_extra=group("batching")
    )
    queue_size: int = Field(
        64, ge=1, description="requests waiting for the model at most; beyond: 429", json_schema_extra=group("batching")
    )
    worker_timeout_s: float = Field(
        120.0,
        gt=0,
        description="longest wait for the model worker (queue + forward); beyond: 504",
        json_schema_extra=group("batching"),
    )
    shutdown_grace_s: float = Field(
        25.0,
        ge=0,
        description="after SIGTERM, how long (s) requests in flight may take to finish",
        json_schema_extra=group("batching"),
    )
    # --- thresholds and operator feedback -------------------------------------------------------------------------
    target_false_alarm_rate: float = Field(
        0.02,
        gt=0,
        lt=0.5,
        description="quantile rule: flag about this fraction of good frames, once 1/rate exist",
        json_schema_extra=group("thresholds"),
    )
    calibration_min_frames: int = Field(
        10,
        ge=1,
        description="fewer real normal frames: the threshold is provisional",
        json_schema_extra=group("thresholds"),
    )
    calibration_max_frames: int = Field(
        100,
        ge=1,
        description="calibration frames kept per product (oldest go)",
        json_schema_extra=group("thresholds"),
    )
    feedback_max_frames: int = Field(
        200,
        ge=1,
        description="operator-labelled frames kept per product (oldest go)",
        json_schema_extra=group("thresholds"),
    )
    history_thumbnails: bool = Field(
        True,
        description="make a 160 px thumbnail of every inspected frame for its record (the console's recent "
        "inspections show them); false saves that work per frame, e.g. on a station that asks for outputs=verdict",
        json_schema_extra=group("thresholds"),
    )
    # --- defect regions ----------------------------------------------------------------------------------------
    min_region_area_px: int = Field(
        16,
        ge=1,
        description="mask components smaller than this (pixels) are specks",
        json_schema_extra=group("regions"),
    )
    max_regions_listed: int = Field(
        50,
        ge=0,
        description="most regions listed per result (regions_truncated beyond)",
        json_schema_extra=group("regions"),
    )
    # --- records ---------------------------------------------------------------------------------------------------
    database_url: str = Field(
        "",
        description="the records database (postgresql://user:password@host/db); empty: SQLite in DATA_DIR/records",
        json_schema_extra=group("records"),
    )
    records_flush_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often (s) spooled records are written to the database",
        json_schema_extra=group("records"),
    )
    archive_keep_ng: bool = Field(
        True,
        description="archive every anomalous (NG) frame (a product's retention may say otherwise)",
        json_schema_extra=group("records"),
    )
    archive_keep_ok_every: int = Field(
        1,
        ge=0,
        description="archive every Nth OK frame per product (0: none, 1: all; the size cap bounds the archive)",
        json_schema_extra=group("records"),
    )
    archive_days: int = Field(
        30, ge=1, le=36500, description="archived frames are kept this many days", json_schema_extra=group("records")
    )
    archive_max_bytes: int = Field(
        10 * 1024**3,
        ge=0,
        description="the archive's size cap (bytes): the oldest frames go first beyond it",
        json_schema_extra=group("records"),
    )
    archive_prune_s: float = Field(
        600.0,
        gt=0,
        description="how often (s) the archive is pruned (retention days, size cap)",
        json_schema_extra=group("records"),
    )
    timezone: str = Field(
        "UTC",
        description="the plant's IANA time zone (e.g. Europe/Berlin): the reports' hours and shifts are its local time",
        json_schema_extra=group("records"),
    )
    shifts: str = Field(
        DEFAULT_SHIFTS,
        description="the reports' shifts, [name=]HH:MM-HH:MM,... in TIMEZONE (a shift crossing midnight belongs to "
        "the day it starts); no overlaps, gaps allowed",
        json_schema_extra=group("records"),
    )
    review_band: float = Field(
        0.1,
        ge=0,
        le=1,
        description="inspections scoring within ±band × |threshold| of the threshold wait for review (a product's "
        "review policy may say otherwise; 0: only exactly on it)",
        json_schema_extra=group("records"),
    )
    review_all_ng: bool = Field(
        False,
        description="every anomalous (NG) inspection waits for review too (a product's policy may say otherwise)",
        json_schema_extra=group("records"),
    )
    # --- replicas ----------------------------------------------------------------------------------------------
    store_poll_s: float = Field(
        2.0,
        gt=0,
        description="while the change feed cannot listen, how often (s) to re-read the product registry (one query)",
        json_schema_extra=group("replicas"),
    )
    blob_grace_s: float = Field(
        600.0,
        gt=0,
        description="an unreferenced bank or frame blob is removed once this old (s): another replica may be "
        "writing it",
        json_schema_extra=group("replicas"),
    )
    # --- observability -----------------------------------------------------------------------------------------
    metrics_per_product: bool = Field(
        False,
        description="add a product label to inspection counts and scores",
        json_schema_extra=group("observability"),
    )
    metrics_max_products: int = Field(
        50,
        ge=1,
        description="with METRICS_PER_PRODUCT: products labelled by name at most; the rest: 'other'",
        json_schema_extra=group("observability"),
    )
    log_level: LogLevel = Field(
        "info", description="critical, error, warning, info or debug", json_schema_extra=group("observability")
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @field_validator("shifts")
    @classmethod
    def _valid_shifts(cls, value: str) -> str:
        parse_shifts(value)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _int_within_bounds(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT_SETTING:
            raise ValueError(f"at most {MAX_INT_SETTING} (2**53)")
        return value

    @property
    def api_key_list(self) -> list[str]:
        """DCPSFR_API_KEYS split at commas, blanks dropped (empty: authentication off)."""
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def records_dir(self) -> Path:
        """The records' spool, the SQLite database (without DATABASE_URL) and the frame archive: DATA_DIR/records."""
        return self.data_dir / "records"

    @property
    def blobs_dir(self) -> Path:
        """The product registry's blobs (reference banks, labelled frames): DATA_DIR/blobs."""
        return self.data_dir / "blobs"


def variable_name(name: str) -> str:
    """The environment variable of a Settings field, e.g. DCPSFR_MODEL_CONFIG for model_config_name."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"{PREFIX}{name.upper()}"


def setting_variables() -> set[str]:
    """Every environment variable a setting reads."""
    return {variable_name(name) for name in Settings.model_fields}


def settings_by_group() -> dict[str, list[str]]:
    """The Settings field names in each of GROUPS, in GROUPS' order (essential first)."""
    grouped: dict[str, list[str]] = {name: [] for name in GROUPS}
    for name, info in Settings.model_fields.items():
        grouped[(info.json_schema_extra or {})["group"]].append(name)
    return grouped


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per DCPSFR_* variable that no setting reads, naming the closest real one (typos are silent
    otherwise: the setting keeps its default)."""
    known = setting_variables()
    warnings = []
    for variable in sorted(v.upper() for v in environ if v.upper().startswith(PREFIX)):
        if variable in known or variable in OTHER_VARIABLES:
            continue
        suffixes = {name.removeprefix(PREFIX): name for name in known}  # the shared prefix would make all look alike
        closest = difflib.get_close_matches(variable.removeprefix(PREFIX), sorted(suffixes), n=1, cutoff=0.6)
        hint = f"; did you mean {suffixes[closest[0]]}?" if closest else ""
        if variable in RENAMED:
            hint += f" ({variable} was the camera client's; it reads {RENAMED[variable]} now)"
        warnings.append(f"{variable} is not a setting of the service and is ignored{hint}")
    return warnings
