"""Liveness, readiness and the Prometheus exposition. All three are `async` and do no blocking work, so they
answer on the event loop at once and never queue behind image decoding or the thread pool."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.dependencies import ServicesDep
from service.api.errors import error_responses
from service.api.middleware import is_authorized
from service.api.schemas import DownloadProgress, Health, Readiness, product_mode

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always 200 {"status": "ok"} while the process runs, loading or not; no model, store or API key needed."""
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: 200 once the model is loaded and warmed, else 503",
    description='Without a valid API key (when keys are configured) the body is only `{"ready": bool}`; '
    "with one it adds the status, the reason when not ready, config, mode, device and product count.",
    response_model=Readiness,
    responses={503: {"description": "not ready", "model": Readiness}},
)
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """200 once the model is ready and the service is not draining, else 503; also 503 while the product store's folder
    is unavailable (as the last store poll or request found it: no disk access here). The details need a valid API key
    when keys are configured."""
    readiness = readiness_of(services)
    status_code = 200 if readiness.ready else 503
    if not is_authorized(request.headers, list(services.keys)):
        readiness = Readiness(ready=readiness.ready)
    return JSONResponse(readiness.model_dump(mode="json"), status_code=status_code)


def readiness_of(services: ServicesDep) -> Readiness:
    """What /readyz says with a valid key: ready, or draining / unavailable / loading with the reason."""
    worker = services.worker
    store_broken = services.store.unavailable_reason
    if services.lifecycle.draining:
        return Readiness(ready=False, status="draining", detail="the service is shutting down")
    if worker.state == "failed":
        return Readiness(ready=False, status="unavailable", detail=worker.error)
    if store_broken is not None:
        return Readiness(ready=False, status="unavailable", detail=store_broken)
    if worker.state != "ready":
        return loading(services)
    detector = worker.detector
    return Readiness(
        ready=True,
        status="ready",
        config=detector.config.name,
        mode=product_mode(detector),
        device=str(detector.device),
        products=len(services.store),
    )


def loading(services: ServicesDep) -> Readiness:
    """Readiness while the model loads: the start-up download's progress first, when one runs."""
    download = services.download
    progress = download.progress if download is not None else None
    if progress is None:
        return Readiness(ready=False, status="loading", detail="the model is still loading")
    numbers = DownloadProgress(
        files_done=progress.files_done,
        files_total=progress.files_total,
        bytes_done=progress.bytes_done,
        bytes_total=progress.bytes_total,
        file=progress.file,
    )
    return Readiness(ready=False, status="loading", detail=progress.describe(), download=numbers)


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    response_class=PlainTextResponse,  # text/plain, a string: the 200's schema
    responses={
        200: {"description": f"the Prometheus text format ({CONTENT_TYPE_LATEST})"},
        **error_responses(401, 403),
    },
)
async def metrics(services: ServicesDep) -> Response:
    """This replica's metrics in the Prometheus text format; needs an API key when keys are configured (401/403)."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
