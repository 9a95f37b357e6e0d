"""Multipart files -> the engine's Uploads (bytes and names): the one place routes read uploaded files."""

from __future__ import annotations

from fastapi import UploadFile

from service.engine.pipeline import Upload
from service.errors import InvalidInput


async def read_uploads(files: list[UploadFile], field: str = "images") -> list[Upload]:
    """Every file's bytes, named as errors name them: `images[i] (name.png)`, or `images[i]` without a file name."""
    uploads = []
    for i, file in enumerate(files):
        name = f"{field}[{i}] ({file.filename})" if file.filename else f"{field}[{i}]"
        uploads.append(Upload(name, await file.read(), file.filename))
    return uploads


async def single_upload(files: list[UploadFile], field: str = "images") -> Upload:
    """The one file of a field that takes exactly one; InvalidInput for more."""
    if len(files) != 1:
        raise InvalidInput(f"send one file in the multipart field '{field}', not {len(files)}")
    return (await read_uploads(files, field))[0]
