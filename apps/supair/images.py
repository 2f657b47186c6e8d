"""Image files as 8-bit arrays: one decoder for ``--data`` folders and ``supair detect``.

PIL's ``convert("L")`` clips 16-bit images (a 0..65535 ramp becomes 99.6%
white) and drops transparency. :func:`decode_image` instead scales each mode by
its bit depth to [0, 1] and composites transparent pixels onto black (the
scenes' background), then converts to grey (ITU-R 601 luma) or RGB and rounds to
8 bits:

=========================  ==================================================
mode                       read as
=========================  ==================================================
``1``, ``L``, ``RGB``      values / 1 or / 255
``I;16`` (16-bit PNG)      values / 65535
``I`` (32-bit integers)    values / 65535 if they lie in 0..65535, else refused
``F`` (32-bit floats)      values as they are if they lie in [0, 1], else refused
``LA``, ``RGBA``, ``PA``,  colour times alpha (transparent pixels become black)
``P`` with transparency
``P``, ``CMYK``, ...       PIL's conversion to RGB
=========================  ==================================================

The pixel count is bounded (:data:`MAX_IMAGE_PIXELS`) from the file's header,
before anything is decoded. This module needs numpy and PIL only (no torch), so
that a command checks its image files at once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["LUMA", "MAX_IMAGE_PIXELS", "IMAGE_SUFFIXES", "decode_image", "image_to_array", "image_size", "check_image_folder", "check_image_source"]

LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R 601 luma weights of R, G, B."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""The files a folder of the user's images contributes."""

MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest image read (width times height); the scenes are at most 1024 x 1024."""


def _open(path: Path):
    """The PIL image of ``path``, opened lazily (header only), with its size checked."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise ValueError(f"no image file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{path} is too large an image (more than {MAX_IMAGE_PIXELS:,} pixels; "
                         "the scenes are at most 1024x1024): scale it down first") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read {path}: not an image file PIL knows (expected PNG or JPEG)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise ValueError(f"{path} is a {w}x{h} image, more than the {MAX_IMAGE_PIXELS:,} pixels read (the scenes are at "
                         "most 1024x1024): scale it down first")
    if w == 0 or h == 0:
        im.close()
        raise ValueError(f"{path} is an empty image ({w}x{h})")
    return im


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header; a ValueError for what :func:`decode_image` would refuse early."""
    with _open(Path(path)) as im:
        return im.size


def check_image_folder(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder of the user's scenes, in name order, each header checked (nothing is decoded).

    Raises:
        ValueError: the folder holds no image file, or one that is not an image or too large (named).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} contains no images; expected PNG or JPEG files (*.png, *.jpg, *.jpeg)")
    for p in files:
        image_size(p)
    return files


def check_image_source(path: str | os.PathLike) -> None:
    """Raise a ValueError unless ``path`` is a folder of readable images or an ``.npz`` file (only headers are read)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"{path} does not exist; expected a folder of PNG/JPEG images or an .npz file with an 'images' array")
    if path.is_dir():
        check_image_folder(path)
    elif path.suffix.lower() != ".npz":
        raise ValueError(f"{path} is neither a folder nor an .npz file; expected a folder of PNG/JPEG images "
                         "or an .npz file with an 'images' array")


def _unit_float(im) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, 1 or 3)`` float64 values in [0, 1] and the ``(H, W)`` alpha in [0, 1] (None if opaque)."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float64)[..., None], None
    if mode == "L":
        return np.asarray(im, dtype=np.float64)[..., None] / 255.0, None
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.float64)[..., None] / 65535.0, None
    if mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"32-bit integer image with values in [{a.min():g}, {a.max():g}]; expected 0..65535 "
                             "(16 bits): save it as an 8- or 16-bit PNG")
        return a[..., None] / 65535.0, None
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        if not np.isfinite(a).all() or (a.size and (a.min() < 0 or a.max() > 1)):
            raise ValueError("floating-point image with values outside [0, 1]; save it as an 8- or 16-bit PNG")
        return a[..., None], None
    if mode in ("LA", "La"):
        a = np.asarray(im.convert("LA") if mode == "La" else im, dtype=np.float64) / 255.0
        return a[..., :1], a[..., 1]
    if mode == "RGB":
        return np.asarray(im, dtype=np.float64) / 255.0, None
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        a = np.asarray(im if mode == "RGBA" else im.convert("RGBA"), dtype=np.float64) / 255.0
        return a[..., :3], a[..., 3]
    try:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0, None
    except (ValueError, OSError) as err:
        raise ValueError(f"image mode {mode!r} cannot be read ({err})") from None


def image_to_array(im, channels: int) -> np.ndarray:
    """A PIL image as ``(H, W, channels)`` uint8: scaled by its bit depth, alpha composited onto black.

    Args:
        im: a PIL image of any mode.
        channels: 1 (grey, ITU-R 601 luma) or 3 (RGB).

    Raises:
        ValueError: for a mode whose values cannot be mapped to [0, 1].
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    values, alpha = _unit_float(im)
    if alpha is not None:
        values = values * alpha[..., None]
    if channels == 1 and values.shape[-1] == 3:
        values = (values @ LUMA)[..., None]
    elif channels == 3 and values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def decode_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Read an image file as ``(H, W, channels)`` uint8 (see the module's table for each mode).

    Raises:
        ValueError: the file is missing, a folder, not an image, damaged,
            larger than :data:`MAX_IMAGE_PIXELS`, or of a mode whose values do not fit [0, 1].
    """
    path = Path(path)
    with _open(path) as im:
        try:
            im.load()
            return image_to_array(im, channels)
        except ValueError as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
        except (OSError, SyntaxError, EOFError) as err:
            raise ValueError(f"cannot read image {path}: it is damaged or truncated ({err})") from None
