"""The start-up fetch (`python -m service --fetch-weights`, what `make serve` runs): the configured config's missing
backbone files are downloaded in the model worker's thread, before the model loads, while the service already
listens. `/healthz` answers at once, the product routes answer, and `/readyz` reports the download's progress
(bytes, files), then the loading. A failed download is one line: the model is then unavailable (503 with that line
and the command that fetches the files), as it is without weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from model import (
    ConfigError,
    Detector,
    FetchError,
    FetchProgress,
    HubOptions,
    WeightsMissingError,
    fetch_weights,
    load_config,
    weights_fetch_command,
)
from service.settings import Settings

log = logging.getLogger(__name__)

DetectorFactory = Callable[[Settings], Detector]


class WeightsDownload:
    """The fetch before the model loads, and its progress for /readyz (written by the worker thread, read by the event
    loop: one reference swapped at a time)."""

    def __init__(self, options: HubOptions | None = None) -> None:
        self.options = options or HubOptions()
        self.progress: FetchProgress | None = None  # None until a download starts, and when nothing downloads

    def fetched_then_built(self, build: DetectorFactory, settings: Settings) -> Detector:
        """Fetch what the settings' config and mode need (nothing with random weights or for a config the manifest
        does not list), then `build` the detector. Raises WeightsMissingError (one line) when the fetch fails."""
        if not settings.random_init:
            self.fetch(settings)
        return build(settings)

    def fetch(self, settings: Settings) -> None:
        """Download the missing files of the settings' config, reporting progress; raises WeightsMissingError."""
        try:
            config = load_config(settings.model_config_name).name
        except ConfigError:
            return  # the model cannot load either: its own error says why
        try:
            fetch_weights(config, settings.weights_dir, options=self.options, on_progress=self._report)
        except ConfigError:
            return  # a config the manifest does not list: nothing to fetch, loading names what is missing
        except FetchError as err:
            raise WeightsMissingError(
                f"fetching the {config} weights failed: {err}; until it succeeds: "
                f"`{weights_fetch_command(config, settings.weights_dir)}`"
            ) from None

    def _report(self, progress: FetchProgress) -> None:
        if progress.files_total == 0:
            return
        if self.progress is None or progress.files_done != self.progress.files_done:
            log.info("%s", progress.describe())
        self.progress = progress

    def detail(self) -> str | None:
        """What /readyz says while loading: the download's progress, or that it finished; None when nothing was
        downloaded."""
        return self.progress.describe() if self.progress is not None else None
