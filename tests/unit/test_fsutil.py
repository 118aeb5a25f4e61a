"""fsutil.write_atomic: the one atomic-write helper."""

from __future__ import annotations

import os

import pytest

from overnet.fsutil import write_atomic, write_own


def test_new_file_text_and_bytes(tmp_path) -> None:
    path = tmp_path / "hosts"
    write_atomic(str(path), "a\n")
    assert path.read_text() == "a\n" and path.stat().st_mode & 0o777 == 0o644
    write_atomic(str(path), b"\x00b")
    assert path.read_bytes() == b"\x00b"
    assert os.listdir(tmp_path) == ["hosts"]   # no temporary file left


def test_mode_kept_or_set(tmp_path) -> None:
    path = tmp_path / "secret"
    write_atomic(str(path), "x", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    write_atomic(str(path), "y")               # an existing file keeps its mode
    assert path.stat().st_mode & 0o777 == 0o600
    write_atomic(str(path), "z", mode=0o640)
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "z"


def test_failure_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "f"
    write_atomic(str(path), "old")
    with pytest.raises(TypeError):
        write_atomic(str(path), 42)  # type: ignore[arg-type]
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f"]
    with pytest.raises(FileNotFoundError):
        write_atomic(str(tmp_path / "missing" / "f"), "x")


def test_write_own_replaces_whole_files(tmp_path) -> None:
    path = str(tmp_path / "ep.json")
    write_own(path, "old")
    with open(path + ".tmp", "w") as f:     # what a crash mid-write leaves
        f.write("half")
    write_own(path, "new")
    assert open(path).read() == "new"
    assert os.listdir(tmp_path) == ["ep.json"]
