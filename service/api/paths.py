"""Which paths are which, in one table: open (no API key), probe (never counted as work, never refused while
draining) and model (a POST that queues work on the model: admitted before its body is read); and which role a
request needs (ROLE_RULES: operator, engineer or admin, service.keys)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PathClass:
    """A path pattern and what the middleware does with requests to it."""

    pattern: str  # a regular expression matched against the whole path
    open: bool = False  # served without an API key
    probe: bool = False  # health and metrics: not counted in flight, answered while draining
    model: bool = False  # POST queues work on the model worker: admission before the body is read


PATHS = (
    PathClass(r"/healthz", open=True, probe=True),
    PathClass(r"/readyz", open=True, probe=True),
    PathClass(r"/metrics", probe=True),
    PathClass(r"/", open=True),  # the console page
    PathClass(r"/ui(/.*)?", open=True),  # the console's files
    PathClass(r"/inspect", model=True),
    PathClass(r"/products/[^/]+/references", model=True),
)
_COMPILED = tuple((re.compile(p.pattern), p) for p in PATHS)
OTHER = PathClass(r".*")  # the API: needs a key, counted, refused while draining, no admission


def classify(path: str) -> PathClass:
    """The first PATHS entry whose pattern matches all of `path`, else OTHER."""
    return next((cls for regex, cls in _COMPILED if regex.fullmatch(path)), OTHER)


def is_open(path: str) -> bool:
    """Whether a path is served without an API key."""
    return classify(path).open


def is_probe(path: str) -> bool:
    """Whether a path is a probe (health or metrics)."""
    return classify(path).probe


def is_model_route(method: str, path: str) -> bool:
    """Whether a request queues work on the model (admission answers 503/429 before its body is read)."""
    return method == "POST" and classify(path).model


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# (methods, path pattern, role): the first match decides; reads not listed need an operator, changes not listed an admin
ROLE_RULES = (
    (READ_METHODS, r"/audit", "admin"),
    (READ_METHODS, r".*", "operator"),
    (frozenset({"POST"}), r"/inspect", "operator"),
    (frozenset({"POST"}), r"/products/[^/]+/feedback", "operator"),
    (frozenset({"POST"}), r"/products/[^/]+/(references|calibration)", "engineer"),
    (frozenset({"PUT"}), r"/products/[^/]+/(threshold|retention|review-policy|rules)", "engineer"),
    (frozenset({"DELETE"}), r"/products/[^/]+/rules", "engineer"),
    (frozenset({"DELETE"}), r"/products/[^/]+", "admin"),
)
_COMPILED_ROLES = tuple((methods, re.compile(pattern), role) for methods, pattern, role in ROLE_RULES)


def required_role(method: str, path: str) -> str:
    """The least role that may send `method` to `path` (ROLE_RULES; admin for a change no rule names)."""
    return next(
        (role for methods, regex, role in _COMPILED_ROLES if method in methods and regex.fullmatch(path)), "admin"
    )
