"""Liveness, readiness and the Prometheus exposition. All three are `async` and do no blocking work, so they
answer on the event loop at once and never queue behind image decoding or the thread pool."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.dependencies import ServicesDep
from service.errors import error_responses
from service.middleware import is_authorized
from service.results import mode_label

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 {"status": "ok"} while the process runs, loading or not; no model, store or API key needed."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: 200 once the model is loaded and warmed, else 503",
    description='Without a valid API key (when keys are configured) the body is only `{"ready": bool}`; '
    "with one it adds the status, the reason when not ready, config, mode, device and product count.",
    responses={503: {"description": "not ready", "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """200 once the model is ready and the service is not draining, else 503; also 503 while the product store's folder
    is unavailable (as the last store poll or request found it: no disk access here). The details need a valid API key
    when keys are configured."""
    worker = services.worker
    draining = services.lifecycle.draining
    store_broken = services.store.unavailable_reason
    ready = worker.state == "ready" and not draining and store_broken is None
    status_code = 200 if ready else 503
    if not is_authorized(request.headers, services.settings.api_key_list):
        return JSONResponse({"ready": ready}, status_code=status_code)
    if draining:
        return JSONResponse({"ready": False, "status": "draining", "detail": "the service is shutting down"}, 503)
    if worker.state == "failed":
        return JSONResponse({"ready": False, "status": "unavailable", "detail": worker.error}, status_code=503)
    if store_broken is not None:
        return JSONResponse({"ready": False, "status": "unavailable", "detail": store_broken}, status_code=503)
    if not ready:
        return JSONResponse(
            {"ready": False, "status": "loading", "detail": "the model is still loading"}, status_code=503
        )
    detector = worker.detector
    body = {
        "ready": True,
        "status": "ready",
        "config": detector.config.name,
        "mode": mode_label(detector.mode, detector.random_weights),
        "device": str(detector.device),
        "products": len(services.store),
    }
    return JSONResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    response_class=PlainTextResponse,
    responses=error_responses(401, 403),
)
async def metrics(services: ServicesDep) -> Response:
    """This replica's metrics in the Prometheus text format; needs an API key when keys are configured (401/403)."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
