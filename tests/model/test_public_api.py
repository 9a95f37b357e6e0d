"""The package's public API (`model.__all__`) documents itself: every class, function and public method."""

from __future__ import annotations

import inspect

import model


def undocumented(names: list[str]) -> list[str]:
    """Public names among `names` (in `model`) whose object or public methods/properties have no docstring."""
    missing = []
    for name in names:
        obj = getattr(model, name)
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(obj) or issubclass(obj, Exception):
            continue
        for attr, value in vars(obj).items():
            function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not attr.startswith("_") and callable(function) and not (function.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_name_and_method_has_a_docstring():
    assert undocumented(model.__all__) == []


def test_the_check_finds_a_missing_docstring():
    class Bare:
        def method(self):
            return 1

    model.Bare = Bare  # only for this check
    try:
        assert undocumented(["Bare"]) == ["Bare", "Bare.method"]
    finally:
        del model.Bare
