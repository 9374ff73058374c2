"""Atomic writes leave either the old file or the complete new one, never a partial file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from components import atomic


def test_interrupted_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2')  # half-written
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_png_and_numpy_json(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    atomic.write_png(tmp_path / "a" / "x.png", arr)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "x.png")), arr)
    atomic.write_json(tmp_path / "m.json", {"n": np.int64(3), "f": np.float32(0.5), "a": np.zeros(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [0.0, 0.0], "f": 0.5, "n": 3}


def test_atomic_dir_removes_folders_of_killed_writers_only(tmp_path):
    import os
    import subprocess
    import sys

    from components.atomic import atomic_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".real.{dead.pid}.x1.tmp"
    live = tmp_path / f".real.{os.getpid()}.x2.tmp"          # another writer of this process, still at work
    other = tmp_path / f".realx.{dead.pid}.x3.tmp"           # a different target's folder
    for folder in (orphan, live, other):
        folder.mkdir()
        (folder / "part.png").write_bytes(b"half")
    with atomic_dir(tmp_path / "real") as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (tmp_path / "real" / "done.txt").read_text() == "ok"
    assert not orphan.exists()
    assert live.exists() and other.exists()


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        f = atomic.write_text(tmp_path / "shared.txt", "x")
        with atomic.atomic_dir(tmp_path / "folder") as d:
            atomic.write_text(d / "inner.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "folder" / "inner.txt").stat().st_mode) == file_mode
    assert atomic.current_umask() == old
