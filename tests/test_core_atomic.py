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
