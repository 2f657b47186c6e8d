"""supair.images: image files of every PIL mode to 8 bits by their bit depth, one decoder for --data and detect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supair.data as D
from PIL import Image
from supair.images import MAX_IMAGE_PIXELS, decode_image, image_size, image_to_array

RAMP16 = (np.arange(64 * 256).reshape(64, 256) * 4).astype(np.uint16)  # 0 .. 65532


def test_16_bit_png_is_scaled_by_its_depth_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as im:
        assert im.mode == "I;16"
        assert (np.asarray(im.convert("L")) == 255).mean() > 0.99  # what a plain conversion does
    grey = decode_image(tmp_path / "ramp.png", 1)[..., 0]
    assert grey.dtype == np.uint8 and grey.shape == RAMP16.shape
    assert np.array_equal(grey, np.rint(RAMP16 / 65535 * 255).astype(np.uint8))
    assert (grey == 255).mean() < 0.01 and grey.min() == 0
    rgb = decode_image(tmp_path / "ramp.png", 3)
    assert rgb.shape == (*RAMP16.shape, 3) and np.array_equal(rgb[..., 1], grey)


def test_8_bit_images_are_read_exactly(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (9, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(decode_image(tmp_path / "g.png", 1)[..., 0], grey)
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(decode_image(tmp_path / "c.png", 3), rgb)
    luma = np.clip(np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255)
    assert np.array_equal(decode_image(tmp_path / "c.png", 1)[..., 0], luma)


def test_integer_and_float_modes() -> None:
    ints = Image.fromarray(RAMP16.astype(np.int32), mode="I")
    assert np.array_equal(image_to_array(ints, 1)[..., 0], np.rint(RAMP16 / 65535 * 255))
    with pytest.raises(ValueError, match="0..65535"):
        image_to_array(Image.fromarray(np.full((2, 2), 70000, dtype=np.int32), mode="I"), 1)
    floats = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(image_to_array(Image.fromarray(floats, mode="F"), 1)[..., 0], np.rint(floats * 255))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        image_to_array(Image.fromarray(floats * 3, mode="F"), 1)
    assert np.array_equal(image_to_array(Image.fromarray(np.array([[True, False]])), 1)[..., 0], [[255, 0]])


def test_transparency_is_composited_onto_black(tmp_path: Path) -> None:
    la = np.zeros((2, 2, 2), dtype=np.uint8)
    la[..., 0] = 200
    la[..., 1] = [[255, 0], [128, 255]]
    assert np.array_equal(image_to_array(Image.fromarray(la, mode="LA"), 1)[..., 0], [[200, 0], [100, 200]])
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, :, :3] = 255
    rgba[0, :, 3] = [255, 0]
    assert np.array_equal(image_to_array(Image.fromarray(rgba, mode="RGBA"), 3)[0], [[255, 255, 255], [0, 0, 0]])
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # the white entry is transparent
    pal.save(tmp_path / "p.png")
    assert np.array_equal(decode_image(tmp_path / "p.png", 1)[..., 0], [[0, 0]])
    opaque = Image.new("P", (1, 1))
    opaque.putpalette([10, 20, 30] + [0] * 765)
    assert np.array_equal(image_to_array(opaque, 3)[0, 0], [10, 20, 30])


def test_sizes_are_bounded_from_the_header(tmp_path: Path) -> None:
    Image.new("L", (5000, 4000)).save(tmp_path / "big.png")  # 20 M pixels > 4096 x 4096
    assert 5000 * 4000 > MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="5000x4000"):
        image_size(tmp_path / "big.png")
    with pytest.raises(ValueError, match="is a folder"):
        decode_image(tmp_path, 1)
    with pytest.raises(ValueError, match="no image file"):
        decode_image(tmp_path / "missing.png", 1)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "small.png").read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot read image"):
        decode_image(tmp_path / "cut.png", 1)


def test_a_folder_of_16_bit_pngs_loads_like_its_8_bit_copy(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(3):
        eight = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "b").mkdir(exist_ok=True)
        Image.fromarray(eight).save(tmp_path / "a" / f"{i}.png")
        Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "b" / f"{i}.png")  # the same values in 16 bits
    a, _ = D.load_user_images(tmp_path / "a", scene_size=20)
    b, _ = D.load_user_images(tmp_path / "b", scene_size=20)
    assert np.array_equal(a.images.numpy(), b.images.numpy())
