"""The result codes the station writes with every ERROR: one table for the docs, the PLC and the logs."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a part has no verdict. 0 = none (OK or NG); any other code makes the result an ERROR, never an OK."""

    NONE = 0
    CAMERA_TIMEOUT = 1  # no frame within acquire_timeout
    CAMERA_FAILED = 2  # the camera cannot be opened or read
    SERVICE_UNREACHABLE = 3  # connection refused or reset: the service is down
    SERVICE_TIMEOUT = 4  # no answer within inspect_timeout
    SERVICE_BUSY = 5  # 429 queue full, 503 not ready
    FRAME_REJECTED = 6  # 400/413/415/422: the service cannot decode or accept the frame
    SERVICE_ERROR = 7  # 5xx or an answer the station cannot read
    CONFIGURATION = 8  # 401/403/404: wrong key, unknown product; random weights; a part id the service refuses
    UNKNOWN_PRODUCT = 9  # the product index is not in the station's product table
    INTERNAL = 10  # a bug in the station (logged with its traceback)


DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.NONE: "no error: the verdict is OK or NG",
    ErrorCode.CAMERA_TIMEOUT: "the camera gave no frame within acquire_timeout_s",
    ErrorCode.CAMERA_FAILED: "the camera cannot be opened or read",
    ErrorCode.SERVICE_UNREACHABLE: "the service refused or dropped the connection (down, restarting, wrong URL)",
    ErrorCode.SERVICE_TIMEOUT: "the service gave no answer within inspect_timeout_s",
    ErrorCode.SERVICE_BUSY: "the service is overloaded (429) or not ready (503)",
    ErrorCode.FRAME_REJECTED: "the service cannot use the frame (400/413/415/422: undecodable, too large)",
    ErrorCode.SERVICE_ERROR: "the service failed (5xx) or answered something unreadable",
    ErrorCode.CONFIGURATION: "the service refused the key (401/403), does not know the product (404), or runs random "
    "weights (its verdicts mean nothing); or the PLC's part id is not 1-128 printable ASCII characters",
    ErrorCode.UNKNOWN_PRODUCT: "the product index is not in the station's product table",
    ErrorCode.INTERNAL: "an unexpected error in the station (see its log)",
}
