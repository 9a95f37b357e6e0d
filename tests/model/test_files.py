"""The one atomic write: readers see the old file or the new one, never a part; a failed write leaves no trace."""

from __future__ import annotations

import pytest

from model.files import atomic_path, is_temporary, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "pointer.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["pointer.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert is_temporary(tmp.name) and tmp.parent == tmp_path
        raise RuntimeError("the writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_temporary_names_are_hidden_and_recognised():
    assert is_temporary(".current.json.0a1b2c.tmp")
    assert not is_temporary("current.json") and not is_temporary(".lock") and not is_temporary("frame.tmp")
