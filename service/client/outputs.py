"""Result files in the output folder, each written atomically: `<stem>.mask.png` (and `<stem>.map.png`), then
`<stem>.json` last, so a JSON file on disk means its images are complete. Rejected frames get `<stem>.error.json`.
Stems come from `names.safe_stem`; the texts in the JSON files from `names.display_name`.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model import write_atomic

BLOB_FIELDS = ("mask_png", "anomaly_map_png")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """One image's result without the base64 images."""
    return {key: value for key, value in result.items() if key not in BLOB_FIELDS}


class OutputFolder:
    """The folder result files are written into (created if missing); `save_map` also keeps the heat maps."""

    def __init__(self, folder: Path, save_map: bool = False) -> None:
        self.folder = folder
        self.save_map = save_map
        folder.mkdir(parents=True, exist_ok=True)

    def json_path(self, stem: str) -> Path:
        """The path of a frame's result JSON: <folder>/<stem>.json."""
        return self.folder / f"{stem}.json"

    def recorded_source(self, stem: str) -> str | None:
        """The frame key recorded in `<stem>.json` or `<stem>.error.json`, if either exists."""
        for path in (self.json_path(stem), self.folder / f"{stem}.error.json"):
            try:
                return json.loads(path.read_text())["source"]["key"]
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue
        return None

    def write_result(self, stem: str, source: dict[str, Any], response: dict[str, Any], result: dict[str, Any]) -> Path:
        """Mask (and heat map) PNGs, then the JSON that points at them. Returns the JSON path."""
        record: dict[str, Any] = {
            "source": source,
            "product_id": response.get("product_id"),
            "reference_version": response.get("reference_version"),
            "result": summary(result),
            "inspected_at": datetime.now(UTC).isoformat(),
        }
        for field, suffix, wanted in (("mask_png", "mask", True), ("anomaly_map_png", "map", self.save_map)):
            blob = base64.b64decode(result.get(field) or "")
            if wanted and blob:
                path = self.folder / f"{stem}.{suffix}.png"
                write_atomic(path, blob)
                record[field] = path.name
        path = self.json_path(stem)
        write_atomic(path, json.dumps(record, indent=2).encode())
        return path

    def write_error(self, stem: str, source: dict[str, Any], error: str, status: int | None) -> Path:
        """Write <stem>.error.json (source, error, HTTP status, time) for a rejected frame; returns its path."""
        record = {"source": source, "error": error, "status": status, "at": datetime.now(UTC).isoformat()}
        path = self.folder / f"{stem}.error.json"
        write_atomic(path, json.dumps(record, indent=2).encode())
        return path
