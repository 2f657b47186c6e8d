"""Every bad command-line input, run as ``python -m supair`` in a fresh interpreter.

Each case must exit with status 2 and one line on stderr that names the
problem, without a traceback; none may write anything (the whole work folder,
the commands' working directory, is compared before and after).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from supair.cli import main
from supair_faults import TINY, assert_one_line_error, snapshot, supair, write_scenes

pytestmark = pytest.mark.fault


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` grey pixels (its data is cut short: only the header is read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4 * (width + 1)))) + chunk(b"IEND", b""))


def _cases(w: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """id -> (arguments, words the error line must contain); paths inside the work folder ``w``."""
    run, data = str(w / "run"), str(w / "scenes.npz")
    new = ["train", "--data", data, "--out", str(w / "new"), "--steps", "1", *TINY]
    cases = {
        # flags of `supair train`
        "threads-negative": (["train", "--threads", "-1"], ("--threads", ">= 1")),
        "threads-zero": (["train", "--threads", "0"], ("--threads", ">= 1")),
        "minutes-negative": (["train", "--minutes", "-5"], ("--minutes", ">= 0")),
        "minutes-nan": (["train", "--minutes", "nan"], ("--minutes", "finite")),
        "cpu-minutes-negative": (["train", "--cpu-minutes", "-1"], ("--cpu-minutes", ">= 0")),
        "steps-negative": (["train", "--steps", "-1"], ("--steps", ">= 0")),
        "seed-negative": (["train", "--seed", "-1"], ("--seed", ">= 0")),
        "batch-size-text": (["train", "--batch-size", "abc"], ("--batch-size", "integer")),
        # --set values: JSON checked against the field's type
        "set-text-for-int": ([*new, "--set", "train.batch_size=abc"], ("train.batch_size", "integer", "abc")),
        "set-float-for-int": ([*new, "--set", "train.batch_size=16.5"], ("train.batch_size", "integer", "16.5")),
        "set-string-for-int": ([*new, "--set", 'train.steps="5"'], ("train.steps", "integer")),
        "set-null-for-float": ([*new, "--set", "train.learning_rate=null"], ("train.learning_rate", "number", "None")),
        "set-list-for-int": ([*new, "--set", "model.max_steps=[1,2]"], ("model.max_steps", "integer")),
        "set-invalid-json": ([*new, "--set", "model.inference.position_max_std={1"], ("position_max_std", "number")),
        "set-nan": ([*new, "--set", "train.learning_rate=NaN"], ("train.learning_rate", "finite")),
        "set-without-value": ([*new, "--set", "train.batch_size"], ("KEY=VALUE",)),
        "set-unknown-field": ([*new, "--set", "train.bogus=1"], ("unknown config field", "train.bogus")),
        "set-huge-spn": ([*new, "--set", "model.object_spn.num_sums=10000000"], ("model.object_spn.num_sums", "16384")),
        "set-huge-batch": ([*new, "--set", "train.batch_size=100000000"], ("train.batch_size",)),
        # devices
        "device-bogus": ([*new, "--device", "bogus"], ("--device bogus", "cpu")),
        # run folders
        "out-is-a-file": (["train", "--data", data, "--out", data, *TINY], ("is a file",)),
        "out-holds-a-run": (["train", "--data", data, "--out", run, *TINY], ("already holds a run", "--resume", "--overwrite")),
        "out-not-empty": (["train", "--data", data, "--out", str(w / "images"), *TINY], ("not empty", "--overwrite")),
        "resume-with-out": (["train", "--resume", run, "--out", str(w / "elsewhere")], ("--out", "--resume")),
        "resume-with-overwrite": (["train", "--resume", run, "--overwrite"], ("--overwrite",)),
        "resume-missing": (["train", "--resume", str(w / "nowhere")], ("no such run folder",)),
        "resume-a-file": (["train", "--resume", data], ("not a run folder",)),
        "resume-config-typed": (["train", "--resume", str(w / "typed"), "--steps", "9"], ("config.json", "train.batch_size", "integer")),
        "resume-config-invalid": (["train", "--resume", str(w / "invalid"), "--steps", "9"], ("config.json", "not valid json")),
        # data
        "data-missing": (["train", "--data", str(w / "nothing"), *TINY], ("does not exist",)),
        "data-empty-folder": (["train", "--data", str(w / "empty"), "--out", str(w / "new"), *TINY], ("contains no images",)),
        "data-huge-png": (["train", "--data", str(w / "huge"), "--out", str(w / "new"), *TINY], ("too large", "pixels")),
        "data-npz-without-images": (["train", "--data", str(w / "labels.npz"), "--out", str(w / "new"), *TINY], ("no array 'images'",)),
        "data-not-images": (["train", "--data", str(w / "broken"), "--out", str(w / "new"), *TINY], ("cannot read", "broken.png")),
        # detect
        "detect-folder-as-image": (["detect", run, str(w / "images")], ("is a folder",)),
        "detect-missing-image": (["detect", run, str(w / "nope.png")], ("no image file",)),
        "detect-not-an-image": (["detect", run, str(w / "broken" / "broken.png")], ("cannot read",)),
        "detect-huge-png": (["detect", run, str(w / "huge" / "huge.png")], ("too large", "pixels")),
        "detect-out-is-a-file": (["detect", run, str(w / "images" / "a.png"), "--out", data], ("is a file",)),
        "detect-no-checkpoint": (["detect", str(w / "empty"), str(w / "images" / "a.png")], ("no checkpoint",)),
        "detect-checkpoint-folder": (["detect", str(w / "ckptdir"), str(w / "images" / "a.png")], ("is a folder",)),
        "detect-device": (["detect", run, str(w / "images" / "a.png"), "--device", "gpu"], ("--device gpu",)),
        # show
        "show-out-folder": (["show", run, "--out", str(w / "empty")], ("is a folder", ".png")),
        "show-out-not-png": (["show", run, "--out", str(w / "fig.jpg")], (".png",)),
        "show-too-many-images": (["show", run, "--num-images", "100000"], ("--num-images", "64")),
        "show-no-images": (["show", run, "--num-images", "0"], ("--num-images",)),
        "show-missing-checkpoint": (["show", str(w / "nowhere")], ("no checkpoint",)),
    }
    if not torch.cuda.is_available():
        cases["device-cuda"] = ([*new, "--device", "cuda"], ("--device cuda", "not available"))
    return cases


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    w = tmp_path_factory.mktemp("bad_input")
    write_scenes(w / "scenes.npz")
    assert main(["train", "--data", str(w / "scenes.npz"), "--out", str(w / "run"), "--steps", "2", *TINY]) == 0
    for name, edit in (("typed", lambda c: c["train"].update(batch_size="abc")), ("invalid", None)):
        shutil.copytree(w / "run", w / name)
        if edit is None:
            (w / name / "config.json").write_text('{"train": ')
        else:
            config = json.loads((w / name / "config.json").read_text())
            edit(config)
            (w / name / "config.json").write_text(json.dumps(config))
    for folder in ("images", "empty", "huge", "broken", "ckptdir/checkpoint.pt"):
        (w / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(w / "images" / "a.png")
    _png_header_only(w / "huge" / "huge.png", 20000, 20000)
    np.savez(w / "labels.npz", counts=np.zeros(3))
    (w / "broken" / "broken.png").write_bytes(b"\x89PNG not really")
    cases = _cases(w)
    before = snapshot(w)
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = dict(zip(cases, pool.map(lambda args: supair(*args, cwd=w), (a for a, _ in cases.values()))))
    return {"cases": cases, "procs": procs, "before": before, "after": snapshot(w)}


CASE_IDS = list(_cases(Path("/w")))


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line_and_exit_status_2(outcomes: dict, case: str) -> None:
    _, words = outcomes["cases"][case]
    assert_one_line_error(outcomes["procs"][case], *words)


def test_no_bad_input_writes_anything(outcomes: dict) -> None:
    assert outcomes["after"] == outcomes["before"]
