"""What routes get injected: the app's services, a checked product id, a ready model worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request

from service.errors import InvalidField, NotFound, Unavailable
from service.feedback import FrameStore
from service.history import InspectionHistory
from service.lifecycle import Lifecycle
from service.metrics import Metrics
from service.settings import Settings
from service.store import PRODUCT_ID, Product, ProductStore, StoreUnavailable, is_valid_product_id
from service.uploads import UploadDecoder
from service.worker import ModelWorker


@dataclass(frozen=True)
class Services:
    """Everything routes need, built once per app (in `app.state.services`)."""

    settings: Settings
    store: ProductStore
    worker: ModelWorker
    metrics: Metrics
    history: InspectionHistory
    frames: FrameStore
    decoder: UploadDecoder
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


def get_services(request: Request) -> Services:
    """The app's Services (a dependency; no readiness checks)."""
    return request.app.state.services


def get_ready_services(services: Annotated[Services, Depends(get_services)]) -> Services:
    """The services, once the model is loaded and warmed and the store folder is readable (503 before, or when
    either fails). Routes that only read or change stored products take `StoreServices` instead: they answer while
    the model loads or is down."""
    services.worker.check_ready()
    check_store_available(services.store)
    return services


def get_store_services(services: Annotated[Services, Depends(get_services)]) -> Services:
    """The services, once the product store is open and its folder readable (503 with the reason before, when it
    cannot open, or while its volume is lost): without it every product would look absent."""
    if not services.store.is_open:
        raise Unavailable(services.store.open_error or "the product store is not open yet; try again shortly")
    check_store_available(services.store)
    return services


def check_store_available(store: ProductStore) -> None:
    """Raises Unavailable (503) with the reason when the store folder is gone, not a directory or unreadable now
    (a lost volume): without it every product would look absent. Products in memory are kept meanwhile."""
    try:
        store.check_available()
    except StoreUnavailable as err:
        raise Unavailable(str(err)) from None


def check_product_id(product_id: str) -> str:
    """The product id unchanged when valid; raises InvalidField (422) naming the allowed pattern otherwise."""
    if not is_valid_product_id(product_id):
        raise InvalidField(f"invalid product id {product_id!r}: it must match {PRODUCT_ID.pattern}")
    return product_id


def checked_product_id(product_id: Annotated[str, Path(description="product id")]) -> str:
    """The `{product_id}` path parameter, checked (422 when invalid)."""
    return check_product_id(product_id)


def existing_product(store: ProductStore, product_id: str) -> Product:
    """The product (read from disk when not in memory yet); raises NotFound (404) when there is none."""
    product = store.get(product_id)
    if product is None:
        raise unknown_product(product_id)
    return product


def unknown_product(product_id: str) -> NotFound:
    """The 404 of a product id with no product, saying how to create one."""
    return NotFound(
        f"unknown product {product_id!r}: upload its references with POST /products/{product_id}/references"
    )


ServicesDep = Annotated[Services, Depends(get_services)]
StoreServices = Annotated[Services, Depends(get_store_services)]
ReadyServices = Annotated[Services, Depends(get_ready_services)]
ProductId = Annotated[str, Depends(checked_product_id)]
