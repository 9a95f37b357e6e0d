"""Builds the station from its configuration and runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from station.camera import Camera, FolderCamera
from station.config import CameraConfig, StationConfig
from station.handshake import Handshake, ProductTable
from station.inspector import HttpInspector, InspectFailed
from station.metrics import StationMetrics
from station.outputs import ResultsFile
from station.supervisor import Adapter, Supervisor
from station.views import MultiViewCamera, MultiViewInspector, View

log = logging.getLogger("station")


def open_camera(camera: CameraConfig) -> Camera:
    """One configured camera, opened; raises CameraFailed when it cannot be."""
    if camera.kind == "folder":
        return FolderCamera(
            camera.folder,
            camera.name,
            camera.pattern,
            camera.settle_s,
            delete_taken=camera.delete_taken,
            stale_s=camera.stale_s,
        )
    if camera.kind == "genicam":
        from station.genicam import GenICamCamera  # Aravis only when configured

        recipes = {product: recipe.settings() for product, recipe in camera.recipes.items()}
        return GenICamCamera(
            camera.device, camera.name, camera.trigger, camera.settings(), recipes, camera.buffers, camera.stale_s
        )
    from station.opencv import OpenCVCamera  # OpenCV only when configured

    return OpenCVCamera(camera.source, camera.name)


def make_camera(config: StationConfig) -> Camera:
    """The configured camera, or with `views` every camera behind one MultiViewCamera, set for the active
    product (a GenICam camera's recipe); raises CameraFailed when one cannot be opened."""
    active = ProductTable(dict(config.products.table)).resolve(config.products.active)
    product = active[1] if active else ""
    if config.views:
        cameras = {c.name: open_camera(c) for c in [config.camera, *config.cameras]}
        camera: Camera = MultiViewCamera(cameras, views_of(config), product)
    else:
        camera = open_camera(config.camera)
    select = getattr(camera, "select_product", None)
    if select is not None:
        select(product)
    return camera


def views_of(config: StationConfig) -> dict[str, list[View]]:
    """The configured views per part type."""
    return {product: [View(v.name, v.camera, v.product) for v in views] for product, views in config.views.items()}


def make_inspector(config: StationConfig, camera: Camera) -> HttpInspector | MultiViewInspector:
    """The service client: one request per part, or with `views` one per view."""
    if config.views:
        return MultiViewInspector(
            config.service.url,
            config.service.key(),
            config.station,
            views_of(config),
            camera.name,
            allow_random_weights=config.service.allow_random_weights,
        )
    service = config.service
    return HttpInspector(
        service.url, service.key(), config.station, camera.name, allow_random_weights=service.allow_random_weights
    )


def make_adapters(config: StationConfig, handshake: Handshake) -> list[Adapter]:
    """The configured protocols' adapters; those that publish results are added to the handshake's listeners.
    Each protocol library is imported only when configured."""
    protocols, adapters = config.protocol_config(), []
    if protocols.modbus:
        from station.modbus import ModbusAdapter

        adapters.append(ModbusAdapter(handshake, protocols.modbus.host, protocols.modbus.port))
    if protocols.opcua:
        from station.opcua import OpcUaAdapter

        opcua = OpcUaAdapter(handshake, config.station, protocols.opcua.host, protocols.opcua.port)
        handshake.on_result.append(opcua)
        adapters.append(opcua)
    if protocols.mqtt:
        from station.mqtt import MqttAdapter

        mqtt = protocols.mqtt
        client = MqttAdapter(
            handshake,
            config.station,
            mqtt.host,
            mqtt.port,
            mqtt.prefix,
            mqtt.outbox_limit,
            mqtt.username,
            mqtt.password(),
            mqtt.keepalive_s,
        )
        handshake.on_result.append(client)
        adapters.append(client)
    return adapters


def check_active_product(handshake: Handshake, inspector: HttpInspector | MultiViewInspector, timeout_s: float) -> None:
    """Log whether the service is reachable and knows the active product; the station starts either way (it
    answers ERROR with a code until the service is back)."""
    product = handshake.snapshot().active_product
    try:
        inspector.check_product(product, timeout_s)
    except InspectFailed as err:
        log.error(
            "the service cannot inspect %s yet (%s: %s); parts get ERROR until it can", product, err.code.name, err
        )
    else:
        log.info("service ready for product %s", product)


def run(config: StationConfig, stop: threading.Event | None = None) -> int:
    """Run the station until `stop` is set (SIGTERM/SIGINT set it when called from the main thread): the part in
    progress is finished first. Returns the exit status (0). Raises CameraFailed or OSError when the camera or a
    protocol's port cannot be opened. A protocol adapter that dies later is restarted (station.supervisor)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    camera = make_camera(config)
    inspector = make_inspector(config, camera)
    metrics = StationMetrics()
    if config.outputs.metrics_port:
        metrics.serve(config.outputs.metrics_port, config.outputs.metrics_host)
    outputs: list[Any] = [ResultsFile(config.outputs.results_file)] if config.outputs.results_file else []
    products = ProductTable(dict(config.products.table))
    settings = config.handshake.settings()
    handshake = Handshake(
        camera, inspector, products, config.products.active, settings, metrics, outputs, starting=True
    )
    supervisor = Supervisor(make_adapters(config, handshake), metrics)
    try:
        supervisor.start()  # the PLC sees State 0 (starting) while the service is asked about the product
        check_active_product(handshake, inspector, config.handshake.changeover_timeout_s)
        handshake.start()
        log.info("station %s ready: product %s, camera %s", config.station, config.products.active, camera.name)
        handshake.serve(stop)
        log.info("station %s stopped", config.station)
    finally:
        supervisor.stop()
        camera.close()
        inspector.close()
    return 0
