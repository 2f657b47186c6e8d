"""supair.config and supair.fieldtypes: every value checked against its field's type and bounds, in one place."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from supair.cli import build_parser, config_from_args
from supair.config import SupairConfig
from supair.fieldtypes import check_field


@pytest.mark.parametrize(
    "value, annotation, expected",
    [(3, int, 3), (3, float, 3.0), (0.5, float | None, 0.5), (None, float | None, None), ([1, 2], tuple[float, float], (1.0, 2.0)),
     ("x", str, "x"), (True, bool, True), ([], tuple[int, ...], ())],
)
def test_values_that_fit(value, annotation, expected) -> None:
    out = check_field(value, annotation, "f")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value, annotation, message",
    [("abc", int, "f must be an integer, got 'abc'"), (16.5, int, "f must be an integer, got 16.5"), (True, int, "an integer"),
     ("5", int | None, "f must be an integer or null, got '5'"), (None, float, "f must be a finite number, got None"),
     (float("inf"), float, "finite"), ([1, 2], int, "got [1, 2]"), ([1], tuple[float, float], "a list of 2 numbers"),
     (1, bool, "true or false"), (3, str, "a string")],
)
def test_values_that_do_not_fit(value, annotation, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_field(value, annotation, "f")


def test_config_json_and_set_go_through_the_same_checks() -> None:
    d = json.loads(SupairConfig().to_json())
    d["train"]["batch_size"] = "abc"
    with pytest.raises(ValueError, match="train.batch_size must be an integer, got 'abc'"):
        SupairConfig.from_dict(d)
    args = build_parser().parse_args(["train", "--set", "train.batch_size=abc"])
    with pytest.raises(ValueError, match="train.batch_size must be an integer, got 'abc'"):
        config_from_args(args)
    d = json.loads(SupairConfig().to_json())
    d["model"]["object_spn"] = 3
    with pytest.raises(ValueError, match="model.object_spn must be a JSON object"):
        SupairConfig.from_dict(d)
    d = json.loads(SupairConfig().to_json())
    d["model"]["prior"]["bogus"] = 1
    with pytest.raises(ValueError, match="unknown config field model.prior.bogus"):
        SupairConfig.from_dict(d)


def test_a_bare_word_is_a_string_only_for_a_string_field() -> None:
    cfg = config_from_args(build_parser().parse_args(["train", "--set", "model.object_spn.structure=poon-domingos"]))
    assert cfg.model.object_spn.structure == "poon-domingos"
    with pytest.raises(ValueError, match="model.max_steps must be an integer"):
        config_from_args(build_parser().parse_args(["train", "--set", "model.max_steps=three"]))


@pytest.mark.parametrize(
    "key, value, message",
    [("train.threads", 0, "train.threads must be >= 1"), ("train.minutes", -5, "train.minutes must be >= 0"),
     ("train.cpu_minutes", -1, "train.cpu_minutes must be >= 0"), ("train.seed", -1, "train.seed must be between 0"),
     ("train.test_images", 10**8, "train.test_images must be between 1 and 1000000"),
     ("model.object_spn.num_sums", 10**7, "model.object_spn.num_sums must be between 1 and 16384"),
     ("model.inference.lstm_units", 10**6, "model.inference.lstm_units"), ("model.max_steps", 1000, "model.max_steps"),
     ("model.scene_size", 5000, "model.scene_size must be between 8 and 1024"), ("train.dataset", "cifar", "train.dataset")],
)
def test_bounds(key: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SupairConfig().replace(**{key: value})


def test_the_configuration_is_checked_without_torch() -> None:
    code = ("import sys; from supair.cli import build_parser, config_from_args; "
            "config_from_args(build_parser().parse_args(['train', '--set', 'train.batch_size=4'])); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
