"""Service settings from `DCPSFR_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
MAX_INT_SETTING = 2**53  # counts and sizes beyond this overflow C sizes (a deque's maxlen, ...): refused at start


class Settings(BaseSettings):
    """Every field reads the environment variable `DCPSFR_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="DCPSFR_", case_sensitive=False, extra="ignore", populate_by_name=True, protected_namespaces=()
    )

    # --- model -----------------------------------------------------------------------------------------------
    model_config_name: str = Field(
        "edge",
        validation_alias="DCPSFR_MODEL_CONFIG",
        description="named detector config (paper, edge, tiny) or a path to a JSON config",
    )
    weights_dir: Path = Field(Path("weights"), description="folder with backbone and heads weight files")
    device: str = Field("auto", description="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...")
    random_init: bool = Field(False, description="real-size random weights, for timing only: results mean nothing")
    runtime: Literal["torch", "openvino", "onnxruntime"] = Field(
        "torch", description="what runs the frozen backbones: torch, or on the CPU openvino / onnxruntime (faster)"
    )
    runtime_cache_dir: Path | None = Field(
        None, description="ONNX exports for openvino/onnxruntime (default: WEIGHTS_DIR/runtime-cache)"
    )
    compile: Literal["off", "compile", "cudagraphs"] = Field(
        "off", description="torch runtime: torch.compile (static shapes) or CUDA graphs; off = eager"
    )
    # --- storage ---------------------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="product references live in DATA_DIR/products/<id>/")
    store_poll_s: float = Field(
        2.0, gt=0, description="how often (s) to look for products changed by other replicas sharing DATA_DIR"
    )
    # --- security and limits ---------------------------------------------------------------------------------
    api_keys: str = Field("", description="comma-separated API keys; empty = no authentication (loopback only)")
    allow_anonymous: bool = Field(
        False, description="true: serve without API keys on a non-loopback address (logged as a warning)"
    )
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest request body in bytes")
    max_pixels: int = Field(50_000_000, ge=1, description="largest image (width x height), checked before decoding")
    max_images_per_request: int = Field(16, ge=1, description="most images in one POST /inspect")
    max_request_pixels: int = Field(
        100_000_000, ge=1, description="most pixels (width x height summed over images) in one request, from headers"
    )
    decode_concurrency: int = Field(2, ge=1, description="images decoded at once, over all requests")
    max_references: int = Field(16, ge=1, le=16, description="most reference images per product upload")
    # --- defect regions --------------------------------------------------------------------------------------
    min_region_area_px: int = Field(16, ge=1, description="mask components smaller than this (pixels) are specks")
    max_regions_listed: int = Field(50, ge=0, description="most regions listed per result (regions_truncated beyond)")
    # --- batching --------------------------------------------------------------------------------------------
    max_batch_size: int = Field(8, ge=1, description="most images in one model forward")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the worker waits to fill a batch")
    queue_size: int = Field(64, ge=1, description="requests waiting for the model at most; beyond: 429")
    worker_timeout_s: float = Field(
        120.0, gt=0, description="longest wait for the model worker (queue + forward); beyond: 504"
    )
    device_cache_bytes: int = Field(
        2 * 1024**3, ge=0, description="device memory for cached per-product tensors (LRU); evicted ones reload"
    )
    shutdown_grace_s: float = Field(
        25.0, ge=0, description="after SIGTERM, how long (s) requests in flight may take to finish"
    )
    # --- thresholds and operator feedback ---------------------------------------------------------------------
    target_false_alarm_rate: float = Field(
        0.02, gt=0, lt=0.5, description="quantile rule: flag about this fraction of good frames, once 1/rate exist"
    )
    calibration_min_frames: int = Field(10, ge=1, description="fewer real normal frames: the threshold is provisional")
    calibration_max_frames: int = Field(100, ge=1, description="calibration frames kept per product (oldest go)")
    feedback_max_frames: int = Field(200, ge=1, description="operator-labelled frames kept per product (oldest go)")
    history_size: int = Field(50, ge=1, description="recent inspections kept per product, in memory")
    # --- observability ---------------------------------------------------------------------------------------
    metrics_per_product: bool = Field(False, description="add a product label to inspection counts and scores")
    metrics_max_products: int = Field(
        50, ge=1, description="with METRICS_PER_PRODUCT: products labelled by name at most; the rest: 'other'"
    )
    log_level: LogLevel = Field("info", description="critical, error, warning, info or debug")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
    def products_dir(self) -> Path:
        """Where products are stored: DATA_DIR/products."""
        return self.data_dir / "products"
