"""A small kustomize for the tests: renders deploy/k8s overlays without the `kustomize` binary (not packaged
for apt or PyPI here). It supports exactly what deploy/k8s uses, and refuses anything else:
`resources` (files and folders), `patches` with a `path` (strategic merge: maps merge key by key, lists of
maps with a `name` merge item by item, `volumeMounts` by `mountPath`, other lists are replaced, as kustomize
does for the fields used here), `images` (`newName`/`newTag`) and `labels` (pairs added to metadata.labels)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images", "labels"}
MERGE_KEYS = {"volumeMounts": "mountPath"}  # lists merged by another key than `name`


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources a `kustomize build folder` would output (same content; order of the resources list)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED
    assert not unsupported, f"{folder}: the test renderer does not support {unsupported}"
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        documents += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{folder}: only `patches: - path:` is supported"
        for change in load_documents(folder / patch["path"]):
            target = find(documents, change["kind"], change["metadata"]["name"])
            merged = strategic_merge(target, change)
            documents[documents.index(target)] = merged
    for image in kustomization.get("images", []):
        for container in all_containers(documents):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for label_set in kustomization.get("labels", []):
        for document in documents:
            document.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    return documents


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} resources"
    return found[0]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return merged
    key = MERGE_KEYS.get(field, "name")
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and key in i for i in base):
        merged = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old[key] == item.get(key)), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge(merged[index], item, field)
        return merged
    return copy.deepcopy(patch)


def all_containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for d in documents if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]
