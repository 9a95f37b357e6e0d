"""Camera-side client of the inspection service (`python -m service.client --help`).

Light on purpose: httpx and the standard library (tqdm for progress), never the model or torch; OpenCV only
for `--camera`, from the `camera` extra.
"""

from service.client.api import ApiError, ConfigurationError, FrameError, InspectApi, RetryPolicy

__all__ = ["ApiError", "ConfigurationError", "FrameError", "InspectApi", "RetryPolicy"]
