"""Multipart files -> the engine's Uploads (bytes and names): the one place routes read uploaded files, and how
their parts are told from text fields (`UploadRoute`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from types import UnionType
from typing import Any, Union, get_args, get_origin
from urllib.parse import unquote

from fastapi import UploadFile, params
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from service.api.openapi import is_refused
from service.engine.pipeline import Upload
from service.errors import InvalidInput

try:
    from python_multipart.multipart import DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE
except ImportError:  # python-multipart before these limits (and their messages) existed
    DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE = 8, 4096 + 128

# one `; key=value` parameter of a Content-Disposition (a value quoted, or up to the next `;`)
PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
EXTENDED_PART = re.compile(r"filename\*(\d+)(\*?)")  # RFC 2231 continuations: filename*0*=..., filename*1=...
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
FILE_TYPES = ("image/", "application/octet-stream")  # a part of one of these types is a file, even without a name
TEXT_PART_LIMIT = (
    "A part without a file name (nor an image Content-Type) is a text field, and text fields are limited: send "
    'images as files (Content-Disposition: form-data; name="images"; filename="frame.png"; curl -F images=@frame.png)'
)
# python-multipart's limits on a part's headers, which Starlette's parser keeps (its message names neither)
HEADER_LIMITS = {
    "Maximum header size exceeded": (
        f"a part's header line is longer than {DEFAULT_MAX_HEADER_SIZE} bytes: shorten the file name in its "
        "Content-Disposition"
    ),
    "Maximum header count exceeded": f"a part has more than {DEFAULT_MAX_HEADER_COUNT} headers",
}


def extended_filename(disposition: str) -> str | None:
    """The file name an RFC 5987/2231 `filename*` parameter of a Content-Disposition gives (`UTF-8''na%C3%AFve.png`,
    continuations `filename*0*`, `filename*1*`, ... joined), or None when it has none."""
    params = {key.lower(): _unquoted(value.strip()) for key, value in PARAMETER.findall(disposition)}
    if "filename*" in params:
        pieces = [(params["filename*"], True)]
    else:
        numbered = sorted(
            (int(m.group(1)), value, bool(m.group(2)))
            for key, value in params.items()
            if (m := EXTENDED_PART.fullmatch(key))
        )
        pieces = [(value, encoded) for _, value, encoded in numbered]
    if not pieces:
        return None
    charset, name = "utf-8", []
    for index, (value, encoded) in enumerate(pieces):
        if encoded and index == 0 and value.count("'") >= 2:
            charset, _, value = value.split("'", 2)  # charset'language'percent-encoded
        name.append(unquote(value, encoding=charset or "utf-8", errors="replace") if encoded else value)
    return "".join(name)


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _has_plain_filename(disposition: str) -> bool:
    return any(key.lower() == "filename" for key, _ in PARAMETER.findall(disposition))


class FilePartsParser(MultiPartParser):
    """Starlette's multipart parser, which takes a part for a file only when its Content-Disposition has a plain
    `filename`; this one also when it has only `filename*` (RFC 5987/2231, as some senders write a non-ASCII name),
    and when it has no name but an image or octet-stream Content-Type (RFC 7578 makes the name optional)."""

    def on_headers_finished(self) -> None:
        """Give such a part the plain `filename` Starlette looks for, then let Starlette go on."""
        part = self._current_part
        disposition = part.content_disposition.decode("latin-1") if part.content_disposition else ""
        if disposition and not _has_plain_filename(disposition):
            name = extended_filename(disposition)
            if name is None and self._has_file_type():
                name = ""
            if name is not None:
                escaped = name.replace("\\", "\\\\").replace('"', '\\"')
                part.content_disposition += f'; filename="{escaped}"'.encode(self._charset, errors="replace")
        super().on_headers_finished()

    def _has_file_type(self) -> bool:
        types = [
            v.decode("latin-1").strip().lower() for k, v in self._current_part.item_headers if k == b"content-type"
        ]
        return any(t.startswith(FILE_TYPES) for t in types)


class UploadRequest(Request):
    """A request whose multipart body is parsed by FilePartsParser."""

    async def _get_form(
        self, *, max_files: int | float = 1000, max_fields: int | float = 1000, max_part_size: int = 1024 * 1024
    ) -> FormData:
        content_type = self.headers.get("Content-Type", "")
        if self._form is None and content_type.lower().startswith("multipart/form-data"):
            parser = FilePartsParser(
                self.headers, self.stream(), max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
            )
            try:
                self._form = await parser.parse()
            except MultiPartException as err:
                raise HTTPException(status_code=400, detail=multipart_detail(err)) from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


def multipart_detail(err: MultiPartException) -> str:
    """Starlette's message for a body it could not parse, saying why a file may have been a field, and naming
    python-multipart's header limits (Starlette says only "Invalid multipart data.")."""
    if err.message.startswith("Part exceeded"):
        return f"{err.message} {TEXT_PART_LIMIT}"
    limit = HEADER_LIMITS.get(str(err.__cause__))
    return f"Invalid multipart data: {limit}" if limit else err.message


class UploadRoute(APIRoute):
    """The route class of routes that take files: their requests are UploadRequests; a body that is not a form (JSON,
    a bare image) is a 422 that says so; a form field the route does
    not take (`image` for `images`, `partid`, a query parameter such as `outputs`) is a 422, not silently dropped
    with its files or value; and a form field the route takes once (`product_id`, `label`, `force`, ...) sent more
    than once is a 422, not its last value."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given an UploadRequest whose form fields were checked."""
        handler = super().get_route_handler()
        form_params = [f for f in self.dependant.body_params if isinstance(f.field_info, params.Form)]  # File too
        known = frozenset(f.alias for f in form_params)
        listed = tuple(f.alias for f in form_params if not is_refused(f.field_info.json_schema_extra))
        single = frozenset(f.alias for f in form_params if not _takes_many(f.field_info.annotation))
        query = frozenset(f.alias for f in self.dependant.query_params)

        async def with_file_parts(request: Request) -> Response:
            upload_request = UploadRequest(request.scope, request.receive)
            if known:
                content_type = upload_request.headers.get("Content-Type", "")
                if not content_type.lower().startswith(FORM_TYPES):
                    raise InvalidInput(not_a_form(content_type, listed))
                form = await upload_request.form()
                refuse_unknown_fields(form, known, listed, query)
                refuse_repeated_fields(form, single)
            return await handler(upload_request)

        return with_file_parts


def not_a_form(content_type: str, listed: tuple[str, ...]) -> str:
    """Why a body of another type (JSON, a bare image) cannot carry a call's fields, and how to send them (FastAPI
    would say each field is missing, though a JSON body may hold them all)."""
    sent = f"a body of type {content_type.split(';')[0].strip()}" if content_type else "a body without a Content-Type"
    return (
        f"this call takes its fields ({', '.join(listed)}) as multipart/form-data, not {sent}: send each field as "
        "a form part, the images as files (curl -F images=@frame.png)"
    )


def refuse_unknown_fields(
    form: FormData, known: frozenset[str], listed: tuple[str, ...], query: frozenset[str] = frozenset()
) -> None:
    """InvalidInput naming each field of the form that is not in `known` (the route's form fields), with the fields
    the route takes (`listed`); a name in `query` (the route's query parameters) is told to go into the URL."""
    unknown = sorted(set(form.keys()) - known)
    if not unknown:
        return
    names = ", ".join(f"'{key}'" for key in unknown)
    hints = [f"'{key}' is a query parameter: send it in the URL (?{key}=...)" for key in unknown if key in query]
    takes = ", ".join(listed)
    raise InvalidInput(f"unknown form field {names}; this call takes {takes}" + "".join(f"; {h}" for h in hints))


def refuse_repeated_fields(form: FormData, single: frozenset[str]) -> None:
    """InvalidInput naming each field of `single` that the form holds more than once."""
    repeated = [f"'{key}' ({len(form.getlist(key))} times)" for key in sorted(single) if len(form.getlist(key)) > 1]
    if repeated:
        raise InvalidInput(f"form field {', '.join(repeated)} sent more than once; send each of these fields once")


def _takes_many(annotation: object) -> bool:
    """Whether a form parameter's type is a list (`list[UploadFile]`, `list[UploadFile] | None`)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return any(get_origin(option) is list for option in options)


async def read_uploads(files: list[UploadFile], field: str = "images") -> list[Upload]:
    """Every file's bytes, named as errors name them: `images[i] (name.png)`, or `images[i]` without a file name."""
    uploads = []
    for i, file in enumerate(files):
        name = f"{field}[{i}] ({file.filename})" if file.filename else f"{field}[{i}]"
        uploads.append(Upload(name, await file.read(), file.filename or None))
    return uploads


async def single_upload(files: list[UploadFile], field: str = "images") -> Upload:
    """The one file of a field that takes exactly one; InvalidInput for more."""
    if len(files) != 1:
        raise InvalidInput(f"send one file in the multipart field '{field}', not {len(files)}")
    return (await read_uploads(files, field))[0]
