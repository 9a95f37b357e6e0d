"""What routes get injected: the app's services (the store only, or a ready model too), a checked product id, and
the audit log's writer for the request's actor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.api.lifecycle import Lifecycle
from service.engine.download import WeightsDownload
from service.engine.worker import ModelWorker
from service.errors import Unavailable
from service.imaging.formats import PRODUCT_ID
from service.keys import ANONYMOUS, ApiKey
from service.metrics import Metrics
from service.products.store import ProductStore
from service.products.workflows import Workflows
from service.records.recorder import Recorder
from service.settings import Settings


@dataclass(frozen=True)
class Services:
    """Everything routes need, built once per app (in `app.state.services`)."""

    settings: Settings
    store: ProductStore
    worker: ModelWorker
    workflows: Workflows
    metrics: Metrics
    recorder: Recorder
    keys: tuple[ApiKey, ...] = ()  # empty: authentication off
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    download: WeightsDownload | None = None  # the start-up fetch of the weights (`--fetch-weights`), when asked


async def get_services(request: Request) -> Services:
    """The app's Services (a dependency; no readiness checks; async: FastAPI runs it on the event loop, not in a
    worker thread)."""
    return request.app.state.services


def get_store_services(services: Annotated[Services, Depends(get_services)]) -> Services:
    """The services, once the product store is open and its folder readable (Unavailable with the reason before,
    when it cannot open, or while its volume is lost): without it every product would look absent. Routes that
    only read or change stored products take these: they answer while the model loads or is down."""
    if not services.store.is_open:
        raise Unavailable(services.store.open_error or "the product store is not open yet; try again shortly")
    services.store.check_available()
    return services


def get_ready_services(services: Annotated[Services, Depends(get_services)]) -> Services:
    """The services, once the model is loaded and warmed and the store folder is readable (Unavailable before, or
    when either fails)."""
    services.worker.check_ready()
    services.store.check_available()
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
StoreServices = Annotated[Services, Depends(get_store_services)]
ReadyServices = Annotated[Services, Depends(get_ready_services)]


def _true_or_false(value: object) -> object:
    """A multipart boolean is the text `true` or `false` (any case), as the schema's `boolean` is sent; pydantic
    alone would also read 1, 0, yes, off, ..."""
    if isinstance(value, str) and value.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


FormBool = Annotated[bool, BeforeValidator(_true_or_false)]
ProductId = Annotated[str, Path(pattern=PRODUCT_ID.pattern, description="1-64 letters, digits, '.', '_' or '-'")]


@dataclass(frozen=True)
class Audit:
    """Writes the audit row of a change made by this request's actor (the API key's name, "anonymous" without
    authentication). Called after the change succeeded: a failed change writes nothing."""

    services: Services
    actor: str

    async def __call__(self, action: str, product_id: str, before: Any = None, after: Any = None) -> None:
        """Append the row. Raises Unavailable (503) when the records database refuses it: the change stands, and the
        answer says that its audit row is missing."""
        try:
            await run_in_threadpool(self.services.recorder.audit.append, self.actor, action, product_id, before, after)
        except SQLAlchemyError as err:
            raise Unavailable(
                f"the change ({action} of {product_id}) was made, but its audit record was not written: the records "
                f"database does not answer: {str(err).splitlines()[0]}"
            ) from err


def get_audit(request: Request, services: Annotated[Services, Depends(get_services)]) -> Audit:
    """The audit writer for the request's actor."""
    return Audit(services, getattr(request.state, "actor", ANONYMOUS))


AuditDep = Annotated[Audit, Depends(get_audit)]
