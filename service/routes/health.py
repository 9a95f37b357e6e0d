"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.dependencies import ServicesDep
from service.results import mode_label

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: 200 once the model is loaded and warmed, else 503 with the reason")
def readyz(services: ServicesDep) -> JSONResponse:
    worker = services.worker
    if worker.state == "failed":
        return JSONResponse({"status": "unavailable", "detail": worker.error}, status_code=503)
    if worker.state != "ready":
        return JSONResponse({"status": "loading", "detail": "the model is still loading"}, status_code=503)
    detector = worker.detector
    body = {
        "status": "ready",
        "config": detector.config.name,
        "mode": mode_label(detector.mode, detector.random_weights),
        "device": str(detector.device),
        "products": len(services.store),
    }
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus exposition")
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
