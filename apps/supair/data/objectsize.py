"""A quick look at the user's images: how large their objects are, for the range of box sizes.

SuPAIR's boxes can only be as wide as ``inference.object_size`` (or ``scale_range`` times the
glimpse) allows: objects larger than the largest box are cut by their boxes, and a range far
wider than the objects lets one box take two touching objects. Without labels,
:func:`estimate_object_size` finds the objects' typical size from the images themselves:

1. the background of each image is its median filter over windows about a quarter of the image
   wide (thin strokes and small shapes vanish from it; smooth gradients and blobs stay), and
   again over windows half the image wide (filled shapes up to that size vanish too);
2. pixels that differ from either background by more than a threshold (six robust standard
   deviations of the differences from the first, at least 0.15) are foreground, small gaps
   closed and holes filled;
3. each connected region of foreground (8 pixels or more, at most 0.8 of the image wide and
   high) is one
   candidate object; the box width it needs is ``max(width, height / ratio_max)`` (a box is at
   most ``ratio_max`` times as high as it is wide);
4. the range is ``[0.6 m, 1.6 m]`` around the median ``m`` of those widths. The median is
   robust where objects touch: two touching objects make one larger region, but most regions
   are single objects. The factors reproduce, on multi-MNIST, about the paper's range
   (``m = 13.6`` px: 8.2 to 21.8 px against 8.4 to 25.2).

The same look measures how far the objects stand out: the *contrast* is the median difference
between a foreground pixel and its background (0.63 on multi-MNIST's white digits on black, see
:data:`REFERENCE_CONTRAST`; about 0.37 for grey digits on grey gradients). The SPNs' variance
bounds were chosen for multi-MNIST; :func:`variance_scale` scales them to the user's contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..images import LUMA
from .scenes import SceneSet

__all__ = ["ObjectSize", "estimate_object_size", "variance_scale", "LOW", "HIGH", "REFERENCE_CONTRAST"]

LOW, HIGH = 0.6, 1.6  # the range, as multiples of the median width an object needs
_MIN_PIXELS = 8
_MIN_THRESHOLD = 0.15
_MAX_EXTENT = 0.8  # a region wider or higher than this fraction of the image is background structure (grid lines, texture)
_SAMPLE = 500
#: The contrast this module measures on multi-MNIST (its first 500 test scenes), whose SPN variance bounds are the presets'.
REFERENCE_CONTRAST = 0.63
_LEAST_SCALE = 0.05


@dataclass(frozen=True)
class ObjectSize:
    """The estimate: the box width range in pixels and what it rests on."""

    least: float
    most: float
    median: float  # median box width the foreground regions need, pixels
    regions: int  # foreground regions measured
    images: int  # images looked at
    contrast: float  # median difference between a foreground pixel and its background, grey levels in [0, 1]

    def describe(self) -> str:
        """One line for the run's log."""
        return (f"object size: boxes {self.least:.1f} to {self.most:.1f} px wide, chosen from {self.regions} foreground regions "
                f"of {self.images} images (median width needed {self.median:.1f} px; --object-size MIN MAX sets it)")


def _grey(scenes: SceneSet, n: int) -> np.ndarray:
    """The first ``n`` images as ``(n, H, W)`` float32 grey levels in [0, 1]."""
    x = scenes.images[:n].numpy().astype(np.float32) / 255.0  # (n, C, H, W)
    if x.shape[1] == 3:
        return np.einsum("nchw,c->nhw", x, LUMA.astype(np.float32))
    return x[:, 0]


def _in_plane(structure: np.ndarray) -> np.ndarray:
    """A 2-D structuring element as a 3-D one that never connects two images of a stack."""
    out = np.zeros((3, 3, 3), dtype=bool)
    out[1] = structure
    return out


def _needed_widths(x: np.ndarray, ratio_max: float) -> tuple[np.ndarray, float]:
    """The box width each foreground region of the images ``(n, H, W)`` needs (pixels), and the foreground's contrast."""
    n, h, w = x.shape
    k = max(9, min(h, w) // 4) | 1  # odd window
    diff = np.abs(x - ndimage.median_filter(x, size=(1, k, k), mode="nearest"))
    # twice as wide, on the image at half resolution: a filled object wider than half the first window
    # is all foreground here, where the first window leaves only its corners
    half = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
    wide = np.repeat(np.repeat(ndimage.median_filter(half, size=(1, k, k), mode="nearest"), 2, 1), 2, 2)
    wide = np.pad(wide, ((0, 0), (0, h - wide.shape[1]), (0, w - wide.shape[2])), mode="edge")
    spread = 1.4826 * float(np.median(np.abs(diff - np.median(diff))))
    threshold = max(_MIN_THRESHOLD, 6 * spread)
    near = diff > threshold
    contrast = float(np.median(diff[near])) if near.any() else 0.0
    mask = near | (np.abs(x - wide) > threshold)
    mask = ndimage.binary_closing(mask, structure=_in_plane(np.ones((3, 3), dtype=bool)))
    mask = ndimage.binary_fill_holes(mask, structure=_in_plane(ndimage.generate_binary_structure(2, 1)))
    labels, count = ndimage.label(mask, structure=_in_plane(np.ones((3, 3), dtype=bool)))  # 8-connected within each image
    if count == 0:
        return np.zeros(0), contrast
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1))
    widths = []
    for region, pixels in zip(ndimage.find_objects(labels), sizes):  # the regions found (a few per image)
        rh, rw = region[1].stop - region[1].start, region[2].stop - region[2].start
        if pixels >= _MIN_PIXELS and rh <= _MAX_EXTENT * h and rw <= _MAX_EXTENT * w:
            widths.append(max(rw, rh / ratio_max))
    return np.asarray(widths, dtype=np.float64), contrast


def estimate_object_size(scenes: SceneSet, ratio_max: float = 1.25, sample: int = _SAMPLE) -> ObjectSize | None:
    """The range of box widths (pixels) that covers the objects of ``scenes``, from their first ``sample`` images.

    Args:
        scenes: the user's images (no labels are used).
        ratio_max: the largest box height / width.
        sample: images looked at.

    Returns:
        The estimate, or None where no foreground region was found (blank images, or structure
        that spans the images, such as grid lines).
    """
    n = min(sample, len(scenes))
    widths, contrast = _needed_widths(_grey(scenes, n), ratio_max)
    if widths.size == 0:
        return None
    m = float(np.median(widths))
    return ObjectSize(least=max(1.0, round(LOW * m, 1)), most=round(HIGH * m, 1), median=m, regions=int(widths.size), images=n,
                      contrast=round(contrast, 3))


def variance_scale(contrast: float) -> float:
    """The factor for the SPNs' variance bounds at this foreground ``contrast``: ``(contrast / REFERENCE_CONTRAST)^2``.

    A Gaussian's log-likelihood ratio between "object here" and "background here" depends on
    the contrast over the standard deviation: scaling the variances with the squared contrast
    keeps the balance the presets strike on multi-MNIST. Kept in ``[0.05, 1]``: never wider
    than the presets'.
    """
    return float(min(1.0, max(_LEAST_SCALE, (contrast / REFERENCE_CONTRAST) ** 2)))
