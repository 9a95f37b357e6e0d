"""Domain errors: what went wrong, in words a client can act on. No HTTP here: `service.api.errors` maps each
kind to its status in one table. The product store's own errors (StoreError, StoreUnavailable, StoreConflict)
live in service.products.store and are mapped there too."""

from __future__ import annotations


class ServiceError(Exception):
    """A failure a client can cause or wait out: `message` says what, `retry_after_s` when to try again."""

    def __init__(self, message: str, retry_after_s: float | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.close = close  # the client should open a new connection (another replica) for the retry


class BadImage(ServiceError):
    """An image format the service knows, but the bytes do not decode (a cut or damaged file)."""


class UnsupportedImage(ServiceError):
    """Not an image, or an image the service does not accept (format, pages, sample format, pixel range)."""


class TooLarge(ServiceError):
    """A body, an image, a request's pixels or its image count over a limit."""


class InvalidInput(ServiceError):
    """A field or parameter with a value the service cannot act on."""


class NotFound(ServiceError):
    """An unknown product, inspection or file."""


class Conflict(ServiceError):
    """The product's state stands in the way: it changed (another upload or a delete) while this request ran, it
    has no room for the change, or the change would leave it a threshold that rejects nothing on its scale."""


class NeedsConfirmation(Conflict):
    """A valid request whose change is large enough to ask first: sent again with the form field `field` set to
    true, it is applied. `details` say what would change (e.g. the threshold and the proposed one)."""

    def __init__(self, message: str, field: str = "force", details: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.details = dict(details or {})


class Overloaded(ServiceError):
    """The model queue is full; retry after `retry_after_s`."""


class Unavailable(ServiceError):
    """The model is loading or failed, the product store is unavailable, or the service is shutting down."""


class ModelTimeout(ServiceError):
    """The model worker did not answer within DCPSFR_WORKER_TIMEOUT_S."""


class StorageFailed(ServiceError):
    """The data dir could not store a change; the previous state is still current."""
