"""Multipart uploads -> decoded images, off the event loop, with the per-request count limit."""

from __future__ import annotations

import asyncio
import time

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.errors import InvalidField, PayloadTooLarge
from service.images import decode_image
from service.metrics import Metrics


def check_count(files: list[UploadFile], limit: int, setting: str) -> None:
    if not files:
        raise InvalidField("no images: send one or more files in the multipart field 'images'")
    if len(files) > limit:
        raise PayloadTooLarge(f"{len(files)} images in one request; at most {limit} ({setting})")


async def decode_uploads(
    files: list[UploadFile], max_pixels: int, metrics: Metrics
) -> tuple[list[Image.Image], list[float]]:
    """Decoded RGB images and the decode time of each in ms; decoding runs in the thread pool."""
    results = await asyncio.gather(*(_decode_one(f, i, max_pixels, metrics) for i, f in enumerate(files)))
    return [image for image, _ in results], [ms for _, ms in results]


async def _decode_one(file: UploadFile, index: int, max_pixels: int, metrics: Metrics) -> tuple[Image.Image, float]:
    data = await file.read()
    name = f"images[{index}] ({file.filename})" if file.filename else f"images[{index}]"
    start = time.perf_counter()
    image = await run_in_threadpool(decode_image, data, name, max_pixels)
    elapsed = time.perf_counter() - start
    metrics.stage_duration.labels("decode").observe(elapsed)
    return image, elapsed * 1000.0
