"""station.yaml: read and checked at start; every problem is reported, one line each (`ConfigError`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from station.genicam import CameraSettings
from station.handshake import FailSafe, ProductTable, Settings
from station.pixels import PIXEL_FORMAT_NAMES

PRODUCT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # the service's product id rule
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Seconds = Annotated[float, Field(gt=0, le=600)]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]
PIXEL_FORMAT_LITERALS = tuple(sorted(PIXEL_FORMAT_NAMES))


class ConfigError(Exception):
    """The configuration cannot be used; `lines` says why, one problem a line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class ServiceConfig(Strict):
    """The inspection service."""

    url: str = Field(pattern=r"^https?://", description="http(s)://host:port of the service")
    api_key: str | None = Field(None, description="an operator-role key; prefer api_key_env")
    api_key_env: str | None = Field(None, description="the environment variable holding the key")
    allow_random_weights: bool = Field(
        False,
        description="take the verdicts of a service that runs random weights (the tiny config, DCPSFR_RANDOM_INIT), "
        "whose scores mean nothing: tests and timing only; without it every part is ERROR 8",
    )

    def key(self) -> str | None:
        """The API key: api_key, else the variable named by api_key_env."""
        return self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)


class FolderCameraConfig(Strict):
    """A camera that writes one file per trigger into a folder."""

    kind: Literal["folder"]
    name: str = Field("camera", pattern=NAME)
    folder: Path
    pattern: str = "*"
    settle_s: float = Field(0.02, ge=0, le=10)
    delete_taken: bool = False
    stale_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="a file written longer than this before a trigger is an earlier part's: never taken",
    )


class OpenCVCameraConfig(Strict):
    """A stream OpenCV reads: an RTSP/HTTP URL or a device index."""

    kind: Literal["opencv"]
    name: str = Field("camera", pattern=NAME)
    source: str = Field(min_length=1, description="rtsp://..., http://... or a device index (0)")


class CameraRecipe(Strict):
    """GenICam settings for a product (unset: the camera's own value)."""

    pixel_format: Literal[PIXEL_FORMAT_LITERALS] | None = None  # type: ignore[valid-type]
    exposure_us: float | None = Field(None, gt=0, description="exposure time, microseconds")
    gain_db: float | None = Field(None, ge=0, description="gain, dB")
    roi: tuple[NonNegative, NonNegative, Positive, Positive] | None = Field(None, description="x, y, width, height")

    def settings(self) -> CameraSettings:
        """As the camera takes them."""
        return CameraSettings(self.pixel_format, self.exposure_us, self.gain_db, self.roi)


class GenICamCameraConfig(CameraRecipe):
    """A GigE Vision or USB3 Vision camera through Aravis, triggered per part; its own settings are the default
    recipe, `recipes` those of products that differ (applied at changeover)."""

    kind: Literal["genicam"]
    name: str = Field("camera", pattern=NAME)
    device: str = Field("", description="the camera's id, serial number or IP address; empty: the first found")
    trigger: str = Field("Software", pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="Software, or a line: Line1")
    recipes: dict[Annotated[str, Field(pattern=PRODUCT_ID)], CameraRecipe] = {}
    buffers: int = Field(4, ge=2, le=64)
    stale_s: float = Field(0.5, ge=0, le=10, description="hardware trigger: a frame older than this is dropped")


CameraConfig = Annotated[FolderCameraConfig | OpenCVCameraConfig | GenICamCameraConfig, Field(discriminator="kind")]


class ViewConfig(Strict):
    """One view of a part type: a camera (and its lighting) judged as a product of its own."""

    name: str = Field(pattern=NAME)
    camera: str = Field(pattern=NAME, description="the name of `camera` or of one of `cameras`")
    product: str = Field(pattern=PRODUCT_ID, description="the service's product with this view's references")


class ModbusConfig(Strict):
    """The older `trigger` section: the Modbus TCP server the PLC polls."""

    kind: Literal["modbus"]
    host: str = "0.0.0.0"
    port: int = Field(502, ge=1, le=65535)


class ModbusProtocol(Strict):
    """The Modbus TCP server the PLC polls (docs/plc.md: the register map)."""

    host: str = "0.0.0.0"
    port: int = Field(502, ge=1, le=65535)


class OpcUaProtocol(Strict):
    """The OPC UA server (OPC 40100 Machine Vision, Simple Inline subset)."""

    host: str = "0.0.0.0"
    port: int = Field(4840, ge=1, le=65535)


class MqttProtocol(Strict):
    """The MQTT broker the station publishes to and takes commands from."""

    host: str = Field(min_length=1, description="the broker's host")
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("inspection", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", description="topic prefix")
    outbox_limit: int = Field(1000, ge=1, le=1_000_000, description="results kept while the broker is away")
    username: str | None = None
    password_env: str | None = Field(None, description="the environment variable holding the password")
    keepalive_s: int = Field(10, ge=2, le=600)

    def password(self) -> str | None:
        """The password from the variable named by password_env."""
        return os.environ.get(self.password_env) if self.password_env else None


class ProtocolsConfig(Strict):
    """Which protocols run (any combination, at least one)."""

    modbus: ModbusProtocol | None = None
    opcua: OpcUaProtocol | None = None
    mqtt: MqttProtocol | None = None

    @model_validator(mode="after")
    def at_least_one(self) -> ProtocolsConfig:
        """A station nobody can trigger is a configuration error."""
        if not (self.modbus or self.opcua or self.mqtt):
            raise ValueError("no protocol configured: give modbus, opcua and/or mqtt")
        return self


class ProductsConfig(Strict):
    """The products the line selects by index (1, 2, ...), and the one active at start."""

    table: dict[Annotated[int, Field(ge=1, le=65535)], Annotated[str, Field(pattern=PRODUCT_ID)]] = Field(min_length=1)
    active: int | str

    @model_validator(mode="after")
    def active_in_table(self) -> ProductsConfig:
        """The active product must be one of the table's (by index or id)."""
        if ProductTable(self.table).resolve(self.active) is None:
            raise ValueError(f"active: {self.active!r} is neither an index nor a product id of the table")
        return self


class HandshakeConfig(Strict):
    """Timeouts, the acknowledge and the fail-safe."""

    acquire_timeout_s: Seconds = 1.0
    inspect_timeout_s: Seconds = 0.2
    changeover_timeout_s: Seconds = 5.0
    acknowledge: bool = True
    fail_safe: FailSafe = FailSafe.REJECT

    def settings(self) -> Settings:
        """The handshake's settings."""
        return Settings(**self.model_dump())


class OutputsConfig(Strict):
    """Where results go besides the PLC."""

    results_file: Path | None = Field(None, description="one JSON line per part (appended)")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Prometheus /metrics on this port")
    metrics_host: str = "0.0.0.0"


class StationConfig(Strict):
    """The whole station.yaml."""

    station: str = Field(pattern=NAME, description="this station's name, sent with each frame")
    service: ServiceConfig
    camera: CameraConfig
    cameras: list[CameraConfig] = Field([], description="more cameras, for parts seen in several views")
    views: dict[Annotated[str, Field(pattern=PRODUCT_ID)], list[ViewConfig]] = Field(
        {}, description="a product id of the table -> its views; each view's verdict counts"
    )
    protocols: ProtocolsConfig | None = None
    trigger: ModbusConfig | None = Field(None, description="older files: the same as protocols.modbus")
    products: ProductsConfig
    handshake: HandshakeConfig = HandshakeConfig()
    outputs: OutputsConfig = OutputsConfig()

    @model_validator(mode="after")
    def views_name_cameras_and_products(self) -> StationConfig:
        """Unique camera names; every view names a camera, is unique in its part type and belongs to a product of
        the table."""
        names = [camera.name for camera in [self.camera, *self.cameras]]
        if len(set(names)) != len(names):
            raise ValueError(f"cameras: every camera needs its own name, found {names}")
        for product, views in self.views.items():
            if ProductTable(self.products.table).resolve(product) is None:
                raise ValueError(f"views: {product!r} is not a product id of products.table")
            if not views or len({view.name for view in views}) != len(views):
                raise ValueError(f"views.{product}: give at least one view, each with its own name")
            for view in views:
                if view.camera not in names:
                    raise ValueError(f"views.{product}.{view.name}: no camera named {view.camera!r} ({names})")
        return self

    @model_validator(mode="after")
    def one_protocol_section(self) -> StationConfig:
        """`protocols`, or the older `trigger` (Modbus), not both; no two listeners on one port."""
        if self.protocols is None and self.trigger is None:
            raise ValueError("protocols: missing (modbus, opcua and/or mqtt)")
        if self.protocols is not None and self.trigger is not None:
            raise ValueError("trigger: give either protocols.modbus or the older trigger section, not both")
        ports: dict[int, str] = {}
        protocols = self.protocol_config()
        listeners = [("protocols.modbus.port", protocols.modbus), ("protocols.opcua.port", protocols.opcua)]
        for name, section in [*listeners, ("outputs.metrics_port", self.outputs)]:
            port = getattr(section, "metrics_port" if name.startswith("outputs") else "port", None)
            if port is None:
                continue
            if port in ports:
                raise ValueError(f"{name}: port {port} is already {ports[port]}'s")
            ports[port] = name
        return self

    def protocol_config(self) -> ProtocolsConfig:
        """The protocols to run (`trigger` read as protocols.modbus)."""
        if self.protocols is not None:
            return self.protocols
        assert self.trigger is not None
        return ProtocolsConfig(modbus=ModbusProtocol(host=self.trigger.host, port=self.trigger.port))


def error_lines(err: ValidationError) -> list[str]:
    """One `where: what` line per problem."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"] if not str(part).startswith("function-after"))
        lines.append(f"{where or 'station.yaml'}: {problem['msg']}")
    return lines


def load_config(path: Path) -> StationConfig:
    """The checked configuration; raises ConfigError (one line per problem) for a missing, unreadable or wrong
    file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError([f"{path}: cannot read it: {err.strerror or err}"]) from err
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}".replace("\n", " ")]) from err
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping of settings, found {type(raw).__name__}"])
    try:
        config = StationConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError([f"{path}: {line}" for line in error_lines(err)]) from err
    if config.camera.kind == "folder" and not config.camera.folder.is_dir():
        raise ConfigError([f"{path}: camera.folder: {config.camera.folder} is not an existing folder"])
    return config
