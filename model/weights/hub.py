"""One weight file from a model hub over HTTP, straight into the weights folder.

The Hugging Face hub's resolve URL (`<endpoint>/<repo>/resolve/<revision>/<file>`) is asked first without following
its redirect: that answer carries the LFS object's sha256 (`X-Linked-Etag`), size and commit. The bytes then come
from where it points (a CDN), with ranged GETs into `<file>.<sha256 prefix>.part`, and are hashed before the file
is renamed into place:

- a reset, a timeout, a 5xx or a short body is retried (`retries` times, backoff doubling from `backoff_s`), each
  try resuming at the bytes already on disk (`Range`); a killed run resumes the same way on the next fetch;
- a connection refused or a name that does not resolve before the hub ever answered is not retried: the machine
  is offline or the URL is wrong, and waiting would only delay the one line that says so;
- one deadline bounds the whole fetch; when it passes, the part stays for the next fetch to resume;
- the sha256 is the manifest's pin, else the hub's advertised one; a mismatch deletes the part;
- the finished file is renamed into place readable by everyone the umask allows (never a private 0600).

Errors are `FetchError`: one line with the HTTP status, the repository, the file and what to do. No download
cache is involved: the file is written once, where it is loaded from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from model.files import fsync_dir, fsync_file
from model.weights import WeightsMissingError, readable_file_mode

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
MAX_REDIRECTS = 5
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
OFFLINE_ADVICE = (
    "check the network and proxy (HTTPS_PROXY), use a mirror (--url or HF_ENDPOINT), "
    "or copy the files in by hand (docs/weights.md, offline)"
)


class FetchError(WeightsMissingError):
    """A download failed; the message is one line: status, repository, file, cause and what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository at a revision (a commit, ideally), and the sha256 the manifest pins (or None)."""

    repo: str
    filename: str
    revision: str
    sha256: str | None = None

    @property
    def label(self) -> str:
        """`repo/filename@revision`, the commit cut to 12 characters."""
        return f"{self.repo}/{self.filename}@{self.revision[:12]}"


@dataclass(frozen=True)
class HubOptions:
    """How to reach the hub: endpoint (None: HF_ENDPOINT, else huggingface.co), token (None: HF_TOKEN or the saved
    login), the seconds for the whole fetch, retries per file and the first backoff, and per-read/connect timeouts."""

    endpoint: str | None = None
    token: str | None = None
    deadline_s: float = 3600.0
    retries: int = 5
    backoff_s: float = 1.0
    read_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0

    def resolved_endpoint(self) -> str:
        """The endpoint in use, without a trailing slash."""
        return (self.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class Credentials:
    """The token sent to the hub (never to the CDN it redirects to) and where it came from, for error messages."""

    token: str | None
    source: str  # "HF_TOKEN", "the saved hub login", "--token" or "" (none)

    @classmethod
    def find(cls, explicit: str | None) -> Credentials:
        """`explicit`, else HF_TOKEN, else huggingface_hub's saved login, else none."""
        if explicit:
            return cls(explicit, "the given token")
        if os.environ.get("HF_TOKEN"):
            return cls(os.environ["HF_TOKEN"], "HF_TOKEN")
        try:
            from huggingface_hub import get_token

            saved = get_token()
        except Exception:  # no huggingface_hub, or an unreadable token file: no token
            saved = None
        return cls(saved, "the saved hub login (hf auth login)") if saved else cls(None, "")


class Deadline:
    """The seconds left for the whole fetch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (negative once passed)."""
        return self.end - time.monotonic()


@dataclass
class _Contact:
    answered: bool = False  # the hub answered once in this download: connection failures are worth retrying


class _Retry(Exception):
    """A failure worth another try (reset, timeout, 5xx, short body); the message says what happened."""


@dataclass(frozen=True)
class _Resolved:
    url: str  # where the bytes are (the CDN, or the resolve URL itself)
    sha256: str | None  # what the hub advertises
    size: int | None
    commit: str


def part_path(dest: Path, sha256: str) -> Path:
    """Where the bytes of `dest` with this sum collect while downloading (resumed by the next fetch)."""
    return dest.with_name(f"{dest.name}.{sha256[:16]}.part")


def download(
    file: HubFile,
    dest: Path,
    options: HubOptions,
    deadline: Deadline,
    on_bytes: Callable[[int, int | None], None] | None = None,
) -> str:
    """Download `file` to `dest` (see the module docstring); returns its verified sha256. `on_bytes(done, total)`
    reports progress (total None while unknown). Raises FetchError."""
    endpoint = options.resolved_endpoint()
    _check_endpoint(file, endpoint)
    credentials = Credentials.find(options.token)
    timeout = httpx.Timeout(options.read_timeout_s, connect=options.connect_timeout_s)
    contact = _Contact()
    tries = 0
    with httpx.Client(timeout=timeout, headers={"Accept-Encoding": "identity"}) as client:
        while True:
            try:
                return _try_once(client, file, dest, endpoint, credentials, deadline, options, on_bytes, contact)
            except _Retry as failure:
                contact.answered = contact.answered or not isinstance(failure.__cause__, httpx.ConnectError)
                tries += 1
                wait = options.backoff_s * 2 ** (tries - 1)
                if not contact.answered:
                    raise FetchError(f"{file.label}: cannot reach {endpoint} ({failure}): {OFFLINE_ADVICE}") from None
                if tries > options.retries:
                    raise FetchError(
                        f"{file.label}: {failure}, {tries} tries: try again later (the next fetch resumes"
                        f"{_kept(dest)}), or {OFFLINE_ADVICE}"
                    ) from None
                if deadline.left() < wait:
                    raise _deadline_error(file, dest, deadline) from None
                log.info("%s: %s; retrying in %.0f s (try %d)", file.label, failure, wait, tries + 1)
                time.sleep(wait)


def _check_endpoint(file: HubFile, endpoint: str) -> None:
    """An http(s) URL with a host, or one line saying it is not."""
    try:
        parts = urlsplit(endpoint)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise FetchError(
            f"{file.label}: {endpoint!r} is not a hub URL (http:// or https://): check --url or HF_ENDPOINT"
        )


def _try_once(
    client: httpx.Client,
    file: HubFile,
    dest: Path,
    endpoint: str,
    credentials: Credentials,
    deadline: Deadline,
    options: HubOptions,
    on_bytes: Callable[[int, int | None], None] | None,
    contact: _Contact,
) -> str:
    _check_deadline(file, dest, deadline)
    resolved = _resolve(client, file, endpoint, credentials, deadline, options)
    contact.answered = True
    expected = _expected_sum(file, resolved, endpoint)
    part = part_path(dest, expected)
    _remove_stale_parts(dest, part)
    have = part.stat().st_size if part.exists() else 0
    if resolved.size is not None and have > resolved.size:
        part.unlink()
        have = 0
    if resolved.size is None or have < resolved.size:
        _fetch_bytes(client, file, part, resolved, endpoint, credentials, deadline, options, on_bytes)
    digest = _sha256_file(part)
    if digest != expected:
        part.unlink(missing_ok=True)
        source = "pinned in the manifest" if file.sha256 else f"advertised by {endpoint}"
        raise FetchError(
            f"{file.label}: sha256 mismatch: the download is {digest[:16]}…, expected {expected[:16]}… ({source}); "
            "the download was deleted: run the fetch again, and if it repeats, check the mirror or proxy"
        )
    fsync_file(part)
    os.chmod(part, readable_file_mode())
    os.replace(part, dest)
    fsync_dir(dest.parent)
    log.info("%s: verified sha256 %s (commit %s)", file.label, digest, resolved.commit or "not told")
    return digest


def _resolve(
    client: httpx.Client,
    file: HubFile,
    endpoint: str,
    credentials: Credentials,
    deadline: Deadline,
    options: HubOptions,
) -> _Resolved:
    """HEAD the resolve URL without following the CDN redirect: its headers carry the LFS sum, size and commit.
    Relative redirects (a renamed repository) are followed."""
    url = f"{endpoint}/{file.repo}/resolve/{file.revision}/{file.filename}"
    for _ in range(MAX_REDIRECTS):
        response = _request(client, "HEAD", url, file, endpoint, credentials, deadline, options)
        location = response.headers.get("location")
        if response.is_redirect and location:
            target = urljoin(url, location)
            if urlsplit(target).netloc == urlsplit(endpoint).netloc and "/resolve/" in urlsplit(target).path:
                url = target  # the repository moved: ask again there
                continue
            return _Resolved(target, _advertised_sum(response), _int(response, "x-linked-size"), _commit(response))
        if response.status_code == 200:
            size = _int(response, "x-linked-size") or _int(response, "content-length")
            return _Resolved(url, _advertised_sum(response), size, _commit(response))
        raise _http_error(response, file, endpoint, credentials)
    raise FetchError(f"{file.label}: more than {MAX_REDIRECTS} redirects from {endpoint}: check the mirror URL")


def _fetch_bytes(
    client: httpx.Client,
    file: HubFile,
    part: Path,
    resolved: _Resolved,
    endpoint: str,
    credentials: Credentials,
    deadline: Deadline,
    options: HubOptions,
    on_bytes: Callable[[int, int | None], None] | None,
) -> None:
    """Append the missing bytes to `part` (from byte `have` on); a server that ignores Range starts it over."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    headers |= _auth(resolved.url, endpoint, credentials)
    request = client.build_request("GET", resolved.url, headers=headers)
    request.extensions["timeout"] = _timeouts(deadline, options)
    try:
        response = client.send(request, stream=True, follow_redirects=True)
    except httpx.TransportError as err:
        raise _Retry(_describe_transport(err)) from err
    try:
        if response.status_code == 416:  # the part holds all there is, or more: start over
            part.unlink(missing_ok=True)
            raise _Retry("the hub refused the resume point (HTTP 416)")
        if _worth_retrying(response.status_code):
            raise _Retry(f"HTTP {response.status_code} from {urlsplit(resolved.url).netloc}")
        if response.status_code not in (200, 206):
            raise _http_error(response, file, endpoint, credentials)
        if response.status_code == 206 and not _starts_at(response, have):
            part.unlink(missing_ok=True)
            raise _Retry("the hub answered another range than asked")
        if response.status_code == 200:
            have = 0  # the server ignored Range: the whole file comes again
        total = resolved.size or (_int(response, "content-length") if response.status_code == 200 else None)
        with open(part, "r+b" if part.exists() else "wb") as handle:
            handle.seek(have)
            handle.truncate()
            try:
                for chunk in response.iter_bytes():  # as received: a cut loses nothing already read
                    handle.write(chunk)
                    have += len(chunk)
                    if on_bytes is not None:
                        on_bytes(have, total)
                    _check_deadline(file, part, deadline)
            except httpx.TransportError as err:
                raise _Retry(f"{_describe_transport(err)} after {_mb(have)} of {_mb(total)}") from err
        if total is not None and have < total:
            raise _Retry(f"the connection closed after {_mb(have)} of {_mb(total)}")
    finally:
        response.close()


def _request(
    client: httpx.Client,
    method: str,
    url: str,
    file: HubFile,
    endpoint: str,
    credentials: Credentials,
    deadline: Deadline,
    options: HubOptions,
) -> httpx.Response:
    request = client.build_request(method, url, headers=_auth(url, endpoint, credentials))
    request.extensions["timeout"] = _timeouts(deadline, options)
    try:
        response = client.send(request, follow_redirects=False)
    except httpx.TransportError as err:
        raise _Retry(_describe_transport(err)) from err
    if _worth_retrying(response.status_code):
        raise _Retry(f"HTTP {response.status_code} from {urlsplit(url).netloc}")
    return response


def _worth_retrying(status: int) -> bool:
    """Timeouts, rate limits and server errors pass; other refusals do not."""
    return status in (408, 429) or status >= 500


def _timeouts(deadline: Deadline, options: HubOptions) -> dict[str, float]:
    """Per-operation timeouts, never past the deadline."""
    left = max(deadline.left(), 0.01)
    read = min(options.read_timeout_s, left)
    return {"connect": min(options.connect_timeout_s, left), "read": read, "write": read, "pool": read}


def _auth(url: str, endpoint: str, credentials: Credentials) -> dict[str, str]:
    """The token goes to the hub only, never to the host it redirects to."""
    same_host = urlsplit(url).netloc == urlsplit(endpoint).netloc
    return {"Authorization": f"Bearer {credentials.token}"} if credentials.token and same_host else {}


def _http_error(response: httpx.Response, file: HubFile, endpoint: str, credentials: Credentials) -> FetchError:
    """One line for a refusal: the status, what the hub says was missing, and what to do."""
    status = response.status_code
    code = response.headers.get("x-error-code", "")
    where = f"HTTP {status} from {urlsplit(endpoint).netloc}"
    if status == 401 and credentials.token:
        why = (
            f"the hub refused the token from {credentials.source} for {file.repo} (expired or revoked?): renew it, "
            "or unset it for public files"
        )
    elif code == "RepoNotFound" or (status == 404 and not code):
        token_hint = "" if credentials.token else " (or private: set HF_TOKEN to a token that can read it)"
        why = f"no repository {file.repo}{token_hint}: check weights/manifest.json, or use a mirror that has it"
    elif status == 401:
        why = f"{file.repo} needs a login: set HF_TOKEN to a token that can read it"
    elif status == 403:
        why = (
            f"access to {file.repo} denied (gated: accept its terms on the hub with the account of the token in "
            f"{credentials.source or 'HF_TOKEN'})"
        )
    elif code == "RevisionNotFound":
        why = f"{file.repo} has no revision {file.revision}: check weights/manifest.json"
    elif status == 404:
        why = f"{file.repo} has no file {file.filename} at revision {file.revision}: check weights/manifest.json"
    else:
        why = f"unexpected answer: {OFFLINE_ADVICE}"
    return FetchError(f"{file.label}: {where}: {why}")


def _expected_sum(file: HubFile, resolved: _Resolved, endpoint: str) -> str:
    if file.sha256 and resolved.sha256 and file.sha256 != resolved.sha256:
        log.warning(
            "%s: %s advertises sha256 %s, the manifest pins %s: the pin decides",
            file.label,
            endpoint,
            resolved.sha256,
            file.sha256,
        )
    expected = file.sha256 or resolved.sha256
    if expected is None:
        raise FetchError(
            f"{file.label}: nothing to verify the download against: {endpoint} advertises no sha256 (X-Linked-Etag) "
            "and weights/manifest.json pins none: pin the file's sha256 in the manifest"
        )
    return expected


def _advertised_sum(response: httpx.Response) -> str | None:
    """The LFS object's sha256, as the hub advertises it in X-Linked-Etag (or ETag)."""
    etag = response.headers.get("x-linked-etag") or response.headers.get("etag") or ""
    etag = etag.removeprefix("W/").strip('"').lower()
    return etag if SHA256_HEX.match(etag) else None


def _commit(response: httpx.Response) -> str:
    return response.headers.get("x-repo-commit", "")


def _int(response: httpx.Response, header: str) -> int | None:
    value = response.headers.get(header, "")
    return int(value) if value.isdigit() else None


def _starts_at(response: httpx.Response, offset: int) -> bool:
    """Whether a 206 answer starts at `offset` (Content-Range: bytes <start>-<end>/<size>)."""
    match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    return bool(match) and int(match.group(1)) == offset


def _remove_stale_parts(dest: Path, keep: Path) -> None:
    """Parts of `dest` for another sum (an older manifest or revision) can never complete: remove them."""
    for stale in dest.parent.glob(f"{dest.name}.*.part"):
        if stale != keep:
            stale.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES * 16):
            digest.update(block)
    return digest.hexdigest()


def _check_deadline(file: HubFile, where: Path, deadline: Deadline) -> None:
    if deadline.left() <= 0:
        raise _deadline_error(file, where, deadline)


def _deadline_error(file: HubFile, where: Path, deadline: Deadline) -> FetchError:
    return FetchError(
        f"{file.label}: the fetch ran past its deadline of {deadline.seconds:.0f} s (a slow or stalled hub"
        f"{_kept(where)}): run it again to resume, with a longer --deadline, or {OFFLINE_ADVICE}"
    )


def _kept(path: Path) -> str:
    """`; 12.0 MB kept in <part>` when a part of `path` is on disk, else ''."""
    parts = [path] if path.name.endswith(".part") else list(path.parent.glob(f"{path.name}.*.part"))
    present = [p for p in parts if p.exists() and p.stat().st_size]
    return f"; {_mb(present[0].stat().st_size)} kept in {present[0]}" if present else ""


def _describe_transport(err: httpx.TransportError) -> str:
    kinds = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no data for too long",
        httpx.RemoteProtocolError: "the connection was cut",
        httpx.ReadError: "the connection was reset",
        httpx.ProxyError: "the proxy refused",
    }
    kind = next((text for cls, text in kinds.items() if isinstance(err, cls)), type(err).__name__)
    detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    return f"{kind} ({detail})" if detail else kind


def _mb(size: int | None) -> str:
    return "? MB" if size is None else f"{size / 1e6:.1f} MB"
