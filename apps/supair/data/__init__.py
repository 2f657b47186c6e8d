"""Scene data for SuPAIR: built-in generated data sets (cached) and the user's own images.

* :mod:`.scenes`: :class:`SceneSet`, the container every source returns.
* :mod:`.generate`: the four generated families (multi-MNIST, sprites, noisy and grid MNIST).
* :mod:`.cache`: :func:`load_dataset`, generation behind a verified on-disk cache.
* :mod:`.user`: :func:`load_user_images`, a folder of images or an ``.npz``.
"""

from .cache import default_cache_dir, load_dataset
from .generate import CHUNK_SIZE, DATASETS, FORMAT_VERSION, SPLITS, generate_dataset
from .scenes import SceneSet
from .user import load_user_images

__all__ = [
    "SceneSet",
    "DATASETS",
    "SPLITS",
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "load_dataset",
    "generate_dataset",
    "load_user_images",
    "default_cache_dir",
]
