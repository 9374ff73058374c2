"""The one file-hash helper: a streamed digest of a file or of bytes."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "md5", sample_above: int | None = None) -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (md5 is what DVC records; sha256 for integrity).

    With `sample_above`, a larger file is fingerprinted by its size and its first and last MiB (fast on
    multi-GB weights; an identity, not an integrity check).
    """
    h = hashlib.new(algorithm)
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if sample_above is not None and size > sample_above:
            h.update(str(size).encode())
            h.update(fh.read(CHUNK))
            fh.seek(-CHUNK, 2)
            h.update(fh.read(CHUNK))
        else:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes, algorithm: str = "sha256") -> str:
    """Hex digest of in-memory bytes."""
    return hashlib.new(algorithm, data).hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC 3 records for a file or folder output (folders: md5 of the sorted entry list + '.dir')."""
    path = Path(path)
    if path.is_file():
        return file_digest(path, "md5")
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != ".dvc")
        for name in sorted(files):
            full = Path(root) / name
            entries.append({"md5": file_digest(full, "md5"), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    payload = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(payload).hexdigest() + ".dir"
