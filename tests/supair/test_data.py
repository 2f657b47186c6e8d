"""Tests of apps/supair/data.py: scene generators, MNIST reading, cache, user images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from supair import data as D
from supair.data import generate
from supair.names import DATASET_DEFAULTS

N = 300  # scenes per generated set in these tests (a chunk is 1000, so generation is quick)


def _gen(name: str, split: str = "train", **kw) -> D.SceneSet:
    kw.setdefault("num_images", N)
    return D.generate_dataset(name, split, **kw)


def _boxes_of(s: D.SceneSet, i: int) -> np.ndarray:
    assert s.counts is not None and s.boxes is not None
    return s.boxes[i, : int(s.counts[i])].numpy()


# ------------------------------------------------------------------------------------------
# Generators: shapes, counts, boxes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.DATASETS)
def test_shapes_dtypes_and_ranges(name: str) -> None:
    s = _gen(name, num_images=40)
    size, (least, most) = DATASET_DEFAULTS[name]
    assert len(s) == 40
    assert s.images.shape == (40, 1, size, size) and s.images.dtype == torch.uint8
    assert s.counts is not None and s.counts.shape == (40,) and s.counts.dtype == torch.int64
    assert s.boxes is not None and s.boxes.shape == (40, most, 4) and s.boxes.dtype == torch.float32
    assert least <= int(s.counts.min()) and int(s.counts.max()) <= most
    x = s.float_batch(slice(0, 10))
    assert x.shape == (10, 1, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert s.float_batch(torch.tensor([3, 5])).shape == (2, 1, size, size)
    assert s.float_batch(7).shape == (1, 1, size, size)
    assert name in s.name


def test_colour_sprites_and_colour_digits() -> None:
    rgb = _gen("sprites", num_images=50, colour=True)
    grey = _gen("sprites", num_images=50, colour=False)
    assert rgb.images.shape == (50, 3, 50, 50) and grey.images.shape == (50, 1, 50, 50)
    assert torch.equal(rgb.counts, grey.counts) and torch.equal(rgb.boxes, grey.boxes)
    # Grey sprites are the luma of the colour ones (same random draws).
    luma = (rgb.images.double() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert (luma - grey.images[:, 0].double()).abs().max() <= 1.0
    # Some sprite is really coloured (channels differ).
    assert (rgb.images[:, 0] != rgb.images[:, 1]).any()
    digits = _gen("multi-mnist", num_images=20, colour=True)
    assert digits.images.shape == (20, 3, 50, 50)


@pytest.mark.parametrize("name", ["multi-mnist", "sprites"])
@pytest.mark.parametrize("max_objects", [2, 4])
def test_counts_and_boxes_match_objects(name: str, max_objects: int) -> None:
    s = _gen(name, max_objects=max_objects)
    counts = s.counts.numpy()
    # Distribution covers 0..max_objects, roughly uniformly.
    hist = np.bincount(counts, minlength=max_objects + 1)
    assert len(hist) == max_objects + 1 and hist.min() > 0.5 * N / (max_objects + 1)
    img = s.images[:, 0].numpy() if s.channels == 1 else s.images.max(1).values.numpy()
    for i in range(len(s)):
        c = int(counts[i])
        # Padding rows are zero.
        assert not s.boxes[i, c:].any()
        boxes = _boxes_of(s, i).astype(int)
        covered = np.zeros((50, 50), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            # Inside the canvas, non-degenerate.
            assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 50
            # Tight: the object touches all four sides of its box.
            patch = img[i, y0:y1, x0:x1]
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            covered[y0:y1, x0:x1] = True
        # Nothing drawn outside the boxes: as many objects as the count says.
        assert not img[i][~covered].any()
        # No two boxes overlap.
        for a in range(c):
            for b in range(a + 1, c):
                ax0, ay0, ax1, ay1 = boxes[a]
                bx0, by0, bx1, by1 = boxes[b]
                assert not (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1)


def test_digit_size_is_about_21_pixels() -> None:
    s = _gen("multi-mnist")
    b = torch.cat([s.boxes[i, : int(s.counts[i])] for i in range(len(s))])
    heights = (b[:, 3] - b[:, 1]).numpy()
    # MNIST digits are ~20 of 28 rows tall; scaled by ~1/1.3 gives ~15 px.
    assert 12 < np.median(heights) < 19
    assert heights.max() <= 28


def test_larger_scenes_and_more_objects() -> None:
    s = _gen("multi-mnist", num_images=30, scene_size=64, max_objects=5)
    assert s.images.shape == (30, 1, 64, 64) and s.boxes.shape == (30, 5, 4)
    assert float(s.boxes.max()) <= 64


# ------------------------------------------------------------------------------------------
# Determinism and train/test separation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.DATASETS)
def test_determinism(name: str) -> None:
    a = _gen(name, num_images=50, seed=3)
    b = _gen(name, num_images=50, seed=3)
    c = _gen(name, num_images=50, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.counts, b.counts)
    assert torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.images, c.images)
    test = _gen(name, "test", num_images=50, seed=3)
    assert not torch.equal(a.images, test.images)


# crowded-mnist draws from the same chunk code as multi-MNIST (another family's streams, a larger canvas)
@pytest.mark.parametrize("name", [n for n in D.DATASETS if n != "crowded-mnist"])
def test_smaller_set_is_prefix_of_larger(name: str) -> None:
    small = _gen(name, num_images=1010, seed=7)
    big = _gen(name, num_images=1500, seed=7)
    assert torch.equal(small.images, big.images[:1010])
    assert torch.equal(small.boxes, big.boxes[:1010])


@pytest.mark.parametrize("name", ["multi-mnist", "crowded-mnist", "occluded-mnist"])
def test_train_and_test_use_different_source_digits(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Replace MNIST by marked fake digits: a block of intensity 1.0 (train) or 0.5 (test).
    def fake_mnist(split: str) -> np.ndarray:
        digits = np.zeros((10, 28, 28), dtype=np.float32)
        digits[:, 6:22, 8:20] = 1.0 if split == "train" else (0.5 if split == "test" else 0.25)
        return digits

    monkeypatch.setattr(generate, "mnist_digits", fake_mnist)
    train = _gen(name, "train", num_images=40)
    test = _gen(name, "test", num_images=40)
    assert train.images.max() == 255
    assert test.images.max() == round(0.5 * 255)


# sha256 (first 16 hex digits) of images, counts and boxes of 30 training scenes, seed 1, as the
# generator wrote them before the crowded and occluded families existed: their streams are unchanged
PAPER_DIGESTS = {
    ("multi-mnist", False): "12ed14ba9e2b155a", ("multi-mnist", True): "94cd7e99fc63d7db",
    ("sprites", False): "6112004794f5a6b9", ("sprites", True): "0842b83b449b535f",
    ("noisy-mnist", False): "d756e2d8ea7a2642", ("noisy-mnist", True): "701539f513dae2fd",
    ("grid-mnist", False): "f6c9034935239700", ("grid-mnist", True): "7876f3708ea1898d",
}


@pytest.mark.parametrize("name, larger", sorted(PAPER_DIGESTS))
def test_paper_data_sets_are_unchanged(name: str, larger: bool) -> None:
    kw = {"max_objects": 3, "scene_size": 64, "colour": True} if larger else {}
    s = _gen(name, num_images=30, seed=1, **kw)
    h = hashlib.sha256()
    for a in (s.images, s.counts, s.boxes):
        h.update(a.numpy().tobytes())
    assert h.hexdigest()[:16] == PAPER_DIGESTS[(name, larger)]


def test_cache_keys_of_paper_data_sets_are_unchanged(tmp_path: Path) -> None:
    D.load_dataset("multi-mnist", "train", num_images=20, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    assert path.name == "multi-mnist_train_20_dc66bad2933bf8f4839d.npz"


@pytest.mark.parametrize("name", D.DATASETS)
def test_count_range(name: str) -> None:
    s = _gen(name, num_images=60, min_objects=1, max_objects=2, scene_size=DATASET_DEFAULTS[name][0])
    assert s.counts is not None and s.boxes is not None and s.boxes.shape[1] == 2
    assert set(s.counts.tolist()) == {1, 2}


def test_noisy_and_grid_share_digit_layout_with_multi_mnist() -> None:
    clean = _gen("multi-mnist", num_images=30, seed=1)
    for name in ("noisy-mnist", "grid-mnist"):
        other = _gen(name, num_images=30, seed=1)
        assert torch.equal(clean.counts, other.counts) and torch.equal(clean.boxes, other.boxes)


# ------------------------------------------------------------------------------------------
# Backgrounds
# ------------------------------------------------------------------------------------------


def test_noisy_mnist_noise_statistics() -> None:
    clean = _gen("multi-mnist", num_images=200, seed=2).float_batch(slice(None)).numpy()
    noisy = _gen("noisy-mnist", num_images=200, seed=2).float_batch(slice(None)).numpy()
    bg = noisy[clean == 0]  # there x = clip(0.1 + N(0, 0.2^2), 0, 1)
    assert bg.size > 100_000
    assert abs(np.median(bg) - 0.1) < 0.01  # clipping (~31% at 0) leaves the median alone
    assert abs(np.mean(bg == 0) - 0.3085) < 0.01  # P(N(0.1, 0.04) <= 0) = Phi(-0.5)
    assert abs(np.quantile(bg, 0.8413) - 0.3) < 0.01  # mean + one sigma
    assert abs(bg.mean() - 0.1396) < 0.005  # E[max(0, X)] for X ~ N(0.1, 0.2^2)
    # On bright digit pixels: 0.8 x + 0.1 (= 0.9 for x = 1) plus the same noise.
    fg = noisy[clean > 0.99]
    assert abs(np.median(fg) - 0.9) < 0.02


def test_grid_mnist_lines() -> None:
    grid = _gen("grid-mnist", num_images=100, seed=5)
    x = grid.float_batch(slice(None))[:, 0].numpy()
    levels = []
    for i in range(len(grid)):
        boxes = _boxes_of(grid, i).astype(int)
        outside = np.ones((50, 50), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            outside[y0:y1, x0:x1] = False
        found = False
        for oy in range(5):
            for ox in range(5):
                rows = (np.arange(50) - oy) % 5 == 0
                cols = (np.arange(50) - ox) % 5 == 0
                lines = rows[:, None] | cols[None, :]
                if x[i][lines].min() >= 0.4 - 1e-6 and not x[i][~lines & outside].any():
                    levels.append(x[i][lines & outside])
                    found = True
        assert found, f"scene {i} has no grid of intensity >= 0.4 every 5 px"
    levels = np.concatenate(levels)
    assert np.allclose(levels, 102 / 255)  # the original's grid: every line pixel raised to 0.4


def test_mnist_digits_are_the_pickled_values() -> None:
    from supair.data.generate import mnist_digits

    digits = mnist_digits("test")
    assert digits.shape == (10000, 28, 28) and digits.dtype == np.float32 and not digits.flags.writeable
    k = np.rint(digits * 256)
    assert np.array_equal(digits, (k / 256).astype(np.float32)) and k.min() == 0 and k.max() == 255


# ------------------------------------------------------------------------------------------
# load_dataset: errors and cache
# ------------------------------------------------------------------------------------------


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multi-mnist.*sprites.*noisy-mnist.*grid-mnist"):
        D.load_dataset("cifar", "train", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        D.load_dataset("sprites", "validation", cache_dir=tmp_path)
    for bad in ({"num_images": 0}, {"scene_size": 4}, {"max_objects": -1},
                {"scene_size": 20, "max_objects": 10}, {"seed": -1}, {"num_images": 2.5}):
        with pytest.raises(ValueError):
            D.load_dataset("sprites", "train", cache_dir=tmp_path, **bad)


def test_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = D.load_dataset("sprites", "test", num_images=20, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(D.cache, "generate_dataset", fail)
    second = D.load_dataset("sprites", "test", num_images=20, cache_dir=tmp_path)
    assert torch.equal(first.images, second.images) and torch.equal(first.boxes, second.boxes)
    # Other parameters are a different file (and here would need generation).
    with pytest.raises(AssertionError):
        D.load_dataset("sprites", "test", num_images=20, seed=1, cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPAIR_CACHE_DIR", str(tmp_path / "a"))
    assert D.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SUPAIR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert D.default_cache_dir() == tmp_path / "x" / "supair"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert D.default_cache_dir() == Path.home() / ".cache" / "supair"


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    first = D.load_dataset("multi-mnist", "test", num_images=20, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    messages: list[str] = []
    again = D.load_dataset("multi-mnist", "test", num_images=20, cache_dir=tmp_path,
                           log=messages.append)
    assert torch.equal(first.images, again.images)
    assert len(messages) == 1 and "rebuild" in messages[0] and "\n" not in messages[0]
    assert path.read_bytes() == data  # rewritten whole


def test_tampered_cache_is_rebuilt(tmp_path: Path) -> None:
    first = D.load_dataset("sprites", "test", num_images=20, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: np.array(f[k]) for k in f.files}
    arrays["images"][0, 0, 0, 0] ^= 1  # valid npz, wrong content
    np.savez(path, **arrays)
    messages: list[str] = []
    again = D.load_dataset("sprites", "test", num_images=20, cache_dir=tmp_path,
                           log=messages.append)
    assert torch.equal(first.images, again.images)
    assert len(messages) == 1 and "SHA-256" in messages[0]
    messages.clear()
    D.load_dataset("sprites", "test", num_images=20, cache_dir=tmp_path, log=messages.append)
    assert messages == []


# ------------------------------------------------------------------------------------------
# SceneSet
# ------------------------------------------------------------------------------------------


def test_sceneset_subset_and_validation() -> None:
    s = _gen("sprites", num_images=10)
    sub = s.subset(torch.tensor([1, 3]))
    assert len(sub) == 2 and torch.equal(sub.images[1], s.images[3])
    assert torch.equal(sub.counts, s.counts[[1, 3]]) and sub.name == s.name
    assert len(s.subset(slice(2, 5))) == 3 and len(s.subset(np.array([0]))) == 1
    assert "SceneSet" in repr(s)
    with pytest.raises(ValueError):
        D.SceneSet(images=torch.zeros(2, 1, 5, 5), counts=None, boxes=None, name="x")
    with pytest.raises(ValueError):
        D.SceneSet(images=torch.zeros(2, 1, 5, 5, dtype=torch.uint8),
                   counts=torch.zeros(3, dtype=torch.int64), boxes=None, name="x")


# ------------------------------------------------------------------------------------------
# User images
# ------------------------------------------------------------------------------------------


def _write_pngs(folder: Path, n: int, size: tuple[int, int], mode: str = "L") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"img_{i:03d}.png"
        )


def test_user_png_folder_resized_with_one_message(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "imgs", 5, (64, 48))
    _write_pngs(tmp_path / "imgs2", 1, (50, 50))
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    (tmp_path / "imgs" / "z_ok.png").write_bytes((tmp_path / "imgs2" / "img_000.png").read_bytes())
    messages: list[str] = []
    scenes, test = D.load_user_images(tmp_path / "imgs", log=messages.append)
    assert test is None and scenes.counts is None and scenes.boxes is None
    assert scenes.images.shape == (6, 1, 50, 50) and scenes.images.dtype == torch.uint8
    assert messages == ["resized 5 images from 64x48 to 50x50"]
    # Sorted by name: the 50x50 one (z_ok.png) is last and unchanged.
    original = np.asarray(Image.open(tmp_path / "imgs2" / "img_000.png"))
    assert np.array_equal(scenes.images[5, 0].numpy(), original)
    rgb, _ = D.load_user_images(tmp_path / "imgs", channels=3, scene_size=32, log=messages.append)
    assert rgb.images.shape == (6, 3, 32, 32)


def test_user_npz_with_counts_is_split(tmp_path: Path) -> None:
    n = 40
    rng = np.random.default_rng(1)
    images = rng.random((n, 100, 100)).astype(np.float32)
    counts = rng.integers(0, 3, n)
    boxes = np.zeros((n, 2, 4), dtype=np.float32)
    boxes[:, :, :] = [10, 20, 30, 60]
    np.savez(tmp_path / "scenes.npz", images=images, counts=counts, boxes=boxes)
    messages: list[str] = []
    train, test = D.load_user_images(tmp_path / "scenes.npz", test_fraction=0.25, seed=3,
                                     log=messages.append)
    assert test is not None and len(train) == 30 and len(test) == 10
    assert messages == ["resized 40 images from 100x100 to 50x50"]
    assert train.images.shape == (30, 1, 50, 50)
    # Boxes scaled by 0.5 and zeroed beyond the count.
    for part in (train, test):
        for i in range(len(part)):
            c = int(part.counts[i])
            expected = torch.tensor([[5.0, 10, 15, 30]] * c).reshape(c, 4)
            assert torch.equal(part.boxes[i, :c], expected)
            assert not part.boxes[i, c:].any()
    # Same seed, same split; the parts together are all images.
    train2, test2 = D.load_user_images(tmp_path / "scenes.npz", test_fraction=0.25, seed=3,
                                       log=messages.append)
    assert torch.equal(test.images, test2.images)
    assert sorted(train.counts.tolist() + test.counts.tolist()) == sorted(counts.tolist())
    # Without counts: everything, no split.
    np.savez(tmp_path / "plain.npz", images=(images[:, :50, :50] * 255).astype(np.uint8))
    everything, none = D.load_user_images(tmp_path / "plain.npz", log=messages.append)
    assert none is None and len(everything) == n


def test_user_npz_rgb_to_grey(tmp_path: Path) -> None:
    images = np.zeros((3, 50, 50, 3), dtype=np.uint8)
    images[..., 1] = 200
    np.savez(tmp_path / "rgb.npz", images=images)
    grey, _ = D.load_user_images(tmp_path / "rgb.npz", channels=1)
    assert int(grey.images.max()) == round(0.587 * 200)
    rgba = np.concatenate([images, np.full((3, 50, 50, 1), 255, np.uint8)], axis=-1)
    np.savez(tmp_path / "rgba.npz", images=rgba)
    rgb, _ = D.load_user_images(tmp_path / "rgba.npz", channels=3)
    assert rgb.images.shape == (3, 3, 50, 50)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"pictures": np.zeros((2, 50, 50), np.uint8)}, "no array 'images'"),
        ({"images": np.zeros((50, 50), np.uint8)}, r"expected \(N, H, W\)"),
        ({"images": np.zeros((2, 1, 50, 50, 1), np.uint8)}, r"expected \(N, H, W\)"),
        ({"images": np.full((2, 50, 50), 1.5, np.float32)}, r"\[0, 1\]"),
        ({"images": np.full((2, 50, 50), np.nan, np.float32)}, "NaN"),
        ({"images": np.zeros((2, 50, 50, 2), np.uint8)}, "2 channels"),
        ({"images": np.zeros((2, 50, 50), np.uint8), "counts": np.zeros(3, int)}, r"\(2,\)"),
        ({"images": np.zeros((2, 50, 50), np.uint8), "counts": np.array([1, -1])}, ">= 0"),
        ({"images": np.zeros((2, 50, 50), np.uint8), "counts": np.array([1, 1]),
          "boxes": np.zeros((2, 4))}, r"\(2, M, 4\)"),
        ({"images": np.zeros((0, 50, 50), np.uint8)}, "empty"),
    ],
)
def test_user_npz_bad_inputs(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        D.load_user_images(tmp_path / "bad.npz")


def test_user_bad_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        D.load_user_images(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        D.load_user_images(tmp_path / "empty")
    _write_pngs(tmp_path / "imgs", 2, (50, 50))
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        D.load_user_images(tmp_path / "imgs")
    good = (tmp_path / "imgs" / "img_000.png").read_bytes()
    (tmp_path / "imgs" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="broken.png"):
        D.load_user_images(tmp_path / "imgs")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage.npz"):
        D.load_user_images(tmp_path / "garbage.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="objects.npz"):
        D.load_user_images(tmp_path / "objects.npz")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="folder"):
        D.load_user_images(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="channels"):
        D.load_user_images(tmp_path / "imgs", channels=2)
