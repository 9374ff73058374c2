"""Decoding input images for the importers: a pixel limit read from the header, never a traceback.

A file that cannot be used raises `FileProblem` (a DataError) carrying the excluded.csv reason and a detail, so
the importer can list it (`prepare.on_bad_image: exclude`) or stop with its one-line message (`error`).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from components.errors import DataError


class FileProblem(DataError):
    """An input file that cannot be used: `reason` (excluded.csv code), `detail` (what and the fix)."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.reason, self.detail = str(path), reason, detail

    def __reduce__(self):  # picklable across the import's worker processes
        return (type(self), (self.path, self.reason, self.detail))


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check off while a header is read: the caller applies max_pixels itself."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def open_image(path: str | Path, max_pixels: int, what: str = "image") -> Image.Image:
    """The decoded PIL image; too many pixels (from the header, before decoding) or a bad file: FileProblem."""
    try:
        with _own_pixel_limit():
            im = Image.open(path)
            width, height = im.size
            if width * height > max_pixels:
                im.close()
                raise FileProblem(path, "too_large", f"{what} of {width}x{height} px ({width * height / 1e6:.0f} MP) "
                                                     f"exceeds prepare.max_pixels={max_pixels}; downsize it or "
                                                     f"raise prepare.max_pixels")
            im.load()
        return im
    except FileProblem:
        raise
    except FileNotFoundError:
        raise FileProblem(path, "undecodable", f"{what} file not found") from None
    except Exception as exc:  # PIL plugins raise many types for damaged files (OSError, SyntaxError, ValueError...)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileProblem(path, "undecodable", f"cannot decode {what} ({text}); the file is corrupt or truncated, "
                                               f"replace it") from None


def read_rgb(path: str | Path, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 array of an image file (FileProblem when it cannot be used)."""
    im = open_image(path, max_pixels)
    try:
        return np.asarray(im.convert("RGB"))
    finally:
        im.close()
