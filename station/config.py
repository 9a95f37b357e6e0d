"""station.yaml: read and checked at start; every problem is reported, one line each (`ConfigError`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from station.handshake import FailSafe, ProductTable, Settings

PRODUCT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # the service's product id rule
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Seconds = Annotated[float, Field(gt=0, le=600)]


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
    api_key: str | None = Field(None, description="a camera-role key; prefer api_key_env")
    api_key_env: str | None = Field(None, description="the environment variable holding the key")

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


class OpenCVCameraConfig(Strict):
    """A stream OpenCV reads: an RTSP/HTTP URL or a device index."""

    kind: Literal["opencv"]
    name: str = Field("camera", pattern=NAME)
    source: str = Field(min_length=1, description="rtsp://..., http://... or a device index (0)")


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
    camera: Annotated[FolderCameraConfig | OpenCVCameraConfig, Field(discriminator="kind")]
    protocols: ProtocolsConfig | None = None
    trigger: ModbusConfig | None = Field(None, description="older files: the same as protocols.modbus")
    products: ProductsConfig
    handshake: HandshakeConfig = HandshakeConfig()
    outputs: OutputsConfig = OutputsConfig()

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
