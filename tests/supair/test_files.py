"""supair.files: atomic writes of run files."""

from __future__ import annotations

import pytest
from supair.files import atomic_write


def test_atomic_write_replaces_whole_files_only(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, b"first")  # creates the folder
    assert path.read_bytes() == b"first" and oct(path.stat().st_mode & 0o777) == "0o644"
    atomic_write(path, lambda fh: fh.write(b"second"))
    assert path.read_bytes() == b"second"

    def half(fh):
        fh.write(b"par")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]

