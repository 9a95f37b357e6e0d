"""Multipart uploads -> decoded images: per-request count and pixel budgets from the headers first, then the
pixels, off the event loop and at most `concurrency` images at once over all requests."""

from __future__ import annotations

import asyncio
import time

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from model.preprocess import above_bit_depth
from service.errors import InvalidField, PayloadTooLarge
from service.images import decode_opened, open_image
from service.metrics import Metrics


def check_count(files: list[UploadFile], limit: int, setting: str) -> None:
    """Raise InvalidField (422) when there are no files, PayloadTooLarge (413) when more than `limit`."""
    if not files:
        raise InvalidField("no images: send one or more files in the multipart field 'images'")
    if len(files) > limit:
        raise PayloadTooLarge(f"{len(files)} images in one request; at most {limit} ({setting})")


def check_bit_depth(images: list[Image.Image], names: list[str], bit_depth: int) -> None:
    """Raise InvalidField (422) when a reference's data exceeds the bit depth given at upload: it would be
    clipped white, and so would every frame like it (without the field, the references' maximum sets it)."""
    for image, name in zip(images, names, strict=True):
        highest = above_bit_depth(image, bit_depth)
        if highest is not None:
            needed = next(bits for bits in range(bit_depth, 17) if highest < 2**bits)
            raise InvalidField(
                f"{name}: values up to {highest} do not fit bit_depth={bit_depth} (0..{2**bit_depth - 1}); send "
                f"bit_depth={needed} or more, or leave it out to take it from the references"
            )


class UploadDecoder:
    """Decodes one request's uploads: every header is read (format, size) and the request's total pixel count
    checked against `max_request_pixels` before any pixel is decoded, which bounds the memory a request takes."""

    def __init__(self, max_pixels: int, max_request_pixels: int, concurrency: int, metrics: Metrics) -> None:
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.metrics = metrics
        self.slots = asyncio.Semaphore(concurrency)  # CPU-heavy image work (decoding, encoding maps) at once

    async def decode(self, files: list[UploadFile]) -> tuple[list[Image.Image], list[float]]:
        """Decoded RGB images and the decode time of each in ms (415/413/400 ApiErrors say what is wrong)."""
        names = [upload_name(file, i) for i, file in enumerate(files)]
        data = [await file.read() for file in files]
        opened = await run_in_threadpool(self._open_all, data, names)
        results = await asyncio.gather(
            *(self._decode_one(image, name) for image, name in zip(opened, names, strict=True))
        )
        return [image for image, _ in results], [ms for _, ms in results]

    def _open_all(self, data: list[bytes], names: list[str]) -> list[Image.Image]:
        opened = [open_image(blob, name, self.max_pixels) for blob, name in zip(data, names, strict=True)]
        total = sum(image.width * image.height for image in opened)
        if total > self.max_request_pixels:
            raise PayloadTooLarge(
                f"{len(opened)} images with {total} pixels in all, more than the per-request limit of "
                f"{self.max_request_pixels} (DCPSFR_MAX_REQUEST_PIXELS): send fewer or smaller images per request"
            )
        return opened

    async def _decode_one(self, image: Image.Image, name: str) -> tuple[Image.Image, float]:
        async with self.slots:
            start = time.perf_counter()
            decoded = await run_in_threadpool(decode_opened, image, name)
            elapsed = time.perf_counter() - start
        self.metrics.stage_duration.labels("decode").observe(elapsed)
        return decoded, elapsed * 1000.0


def upload_name(file: UploadFile, index: int) -> str:
    """How an upload is named in error messages: `images[i] (filename)`, or `images[i]` without a name."""
    return f"images[{index}] ({file.filename})" if file.filename else f"images[{index}]"
