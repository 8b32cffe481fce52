"""Property: whatever values the command line gets, for every option and every config key of every
registered variant, ``zoo`` either runs and writes a folder that loads, or exits with code 2 and one line
``zoo: error: ...``; never a traceback, never another exception.

Bounded to stay fast: tiny configs, 24 in-memory examples of the variant's own input shape, at most 2
steps, a few examples per variant, derandomised (the same examples on every run, so CI is reproducible)
and without hypothesis's example database (nothing written into the repository).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import zoo
from zoo.cli import main
from zoo.config import config_to_dict, field_types

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORDS = st.sampled_from(["", "abc", "nan", "-1", "1e9", "[1,2]", "null", "true", "x=y", "timm:no-such-model"])
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([0, -1, 2**31, 2**70]))
FLOATS = st.one_of(st.floats(-2.0, 12.0, allow_nan=False), st.sampled_from([0.0, -0.0, 1e-9, 1e30, math.inf,
                                                                           -math.inf, math.nan]))


def text_for(hint: Any, default: Any) -> st.SearchStrategy[str]:
    """Values for ``--set KEY=VALUE`` of a field: mostly of its type, sometimes anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        typed = st.booleans().map(json.dumps)
    elif hint is int:
        typed = INTS.map(str)
    elif hint is float:
        typed = FLOATS.map(repr)
    elif hint is str:
        known = {"activation": ["relu", "tanh", "sigmoid", "gelu"], "architecture": ["mlp", "conv", "timm:nope"],
                 "likelihood": ["bernoulli", "gaussian", "mse"], "generator_loss": ["minimax", "non_saturating"],
                 "code_activation": ["identity", "sigmoid", "relu"]}
        typed = st.sampled_from(sorted({str(default), *[w for v in known.values() for w in v]}))
    elif origin in (tuple, list):
        element = st.integers(-2, 12) if (args and args[0] is int) else FLOATS
        lists = st.lists(element, min_size=0, max_size=4)
        typed = st.one_of(lists.map(json.dumps), lists.map(lambda v: ",".join(map(str, v))))
    else:
        typed = WORDS
    return typed


def mostly(draw: st.DrawFn, valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> str:
    """A valid value about four times in five, else an invalid one or any word: most runs get past the checks
    (hypothesis favours small draws, so the invalid branch is the largest one)."""
    if draw(st.integers(0, 4)) < 4:
        return str(draw(valid))
    return str(draw(st.one_of(invalid, WORDS)))


#: `zoo train` options: (valid values, invalid values).
TRAIN_OPTIONS = {
    "--epochs": (st.integers(1, 3), INTS),
    "--batch-size": (st.integers(1, 30), st.integers(-1, 0)),
    "--lr": (st.floats(1e-5, 1.0), FLOATS),
    "--seed": (st.integers(0, 100), st.sampled_from([-1, 2**64, 2**70])),
    "--max-steps": (st.integers(0, 2), st.integers(-2, -1)),
    "--device": (st.sampled_from(["auto", "cpu"]), st.sampled_from(["cuda", "cuda:7", "gpu", "meta", ""])),
    "--precision": (st.sampled_from(["fp32", "bf16", "fp16"]), st.sampled_from(["fp8", "FP16", ""])),
    "--log-every": (st.integers(1, 3), st.integers(-1, 0)),
    "--checkpoint-every": (st.integers(0, 3), st.just(-1)),
    "--collective-timeout": (st.floats(1.0, 1000.0), st.sampled_from([0.0, -1.0, math.nan, math.inf])),
}


@st.composite
def train_command(draw: st.DrawFn, variant: zoo.Variant) -> list[str]:
    """Random values for `zoo train`'s options and a random subset of the variant's config keys."""
    options: list[str] = []
    for option, (valid, invalid) in TRAIN_OPTIONS.items():
        if draw(st.integers(0, 2)) == 0:  # --opt=VALUE: argparse would take "-1e-5" for an option
            options.append(f"{option}={mostly(draw, valid, invalid)}")
    if draw(st.integers(0, 5)) == 0:
        options.append("--resume")  # nothing to resume in a fresh folder: an error naming the folder
    hints = field_types(variant.config_class)
    defaults = config_to_dict(variant.default_config())
    for key in draw(st.lists(st.sampled_from(sorted(defaults)), max_size=2, unique=True)):
        options += ["--set", f"{key}={mostly(draw, text_for(hints.get(key), defaults[key]), WORDS)}"]
    return options


def tiny_sets(variant: zoo.Variant) -> list[str]:
    """``--set`` for every key where the variant's tiny config differs from its default."""
    tiny, default = config_to_dict(variant.tiny_config()), config_to_dict(variant.default_config())
    return [arg for key, value in tiny.items() if value != default[key]
            for arg in ("--set", f"{key}={json.dumps(value)}")]


def data_file(folder: Path, variant: zoo.Variant) -> Path:
    """24 images of the tiny config's input shape in [0, 1], with labels 0..2 (the tiny cvae's classes)."""
    shape = tuple(variant.tiny_config().input_shape)
    generator = torch.Generator().manual_seed(0)
    path = folder / "data.safetensors"
    save_file({"x": torch.rand((24, *shape), generator=generator), "y": torch.arange(24) % 3}, str(path))
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_zoo_outcome(code: int, stderr: str, out: Path) -> None:
    """A valid run whose folder loads, or exit code 2 with one line ``zoo: error: ...`` and no traceback."""
    assert code in (0, 2), (code, stderr)
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("zoo: error: ")]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
        assert "Traceback" not in stderr, stderr
    else:
        assert (out / "config.json").is_file(), "exit code 0 without a model folder"
    if (out / "config.json").exists():  # written, by a run that succeeded or not: it must load
        zoo.load(f"local-dir:{out}")


@pytest.mark.parametrize("name", zoo.list_variants())
def test_zoo_train_gives_a_loadable_folder_or_a_one_line_error(name: str) -> None:
    variant = zoo.get_variant(name)

    @SETTINGS
    @given(options=train_command(variant))
    def check(options: list[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="zoo-property-") as tmp:
            out = Path(tmp) / "out"
            argv = ["train", name, "--data", str(data_file(Path(tmp), variant)), "--out", str(out), "--no-progress",
                    "--max-steps", "2", *tiny_sets(variant), *options]
            code, _, stderr = run(argv)
            assert_zoo_outcome(code, stderr, out)

    check()


@pytest.mark.parametrize("name", zoo.list_variants())
def test_zoo_sample_gives_a_picture_or_a_one_line_error(name: str) -> None:
    variant = zoo.get_variant(name)
    with tempfile.TemporaryDirectory(prefix="zoo-property-") as tmp:
        folder = Path(tmp) / "model"
        zoo.create(name, variant.tiny_config()).save_pretrained(folder)

        @SETTINGS
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            picture = Path(tmp) / "samples.png"
            picture.unlink(missing_ok=True)
            n = mostly(data.draw, st.integers(1, 5), st.integers(-2, 0))
            seed = mostly(data.draw, st.integers(0, 100), st.sampled_from([-1, 2**64, 2**70]))
            label = data.draw(st.one_of(st.none(), st.integers(-2, 12).map(str), WORDS))
            argv = ["sample", str(folder), f"--n={n}", f"--seed={seed}", "--out", str(picture),
                    *([] if label is None else [f"--label={label}"])]
            code, _, stderr = run(argv)
            assert code in (0, 2), (code, stderr)
            if code == 2:
                assert stderr.startswith("zoo: error: ") and len(stderr.strip().splitlines()) == 1, stderr
                assert not picture.exists()
            else:
                assert picture.is_file()

        check()


#: `zoo finetune` options: (valid values, invalid values); --max-steps and --nll-samples stay small.
FINETUNE_OPTIONS = {
    "--epochs": (st.integers(1, 3), INTS),
    "--batch-size": (st.integers(1, 30), st.integers(-1, 0)),
    "--lr": (st.floats(1e-5, 1.0), FLOATS),
    "--seed": (st.integers(0, 100), st.sampled_from([-1, 2**70])),
    "--freeze": (st.sampled_from(["encoder", "decoder"]), st.sampled_from(["head", ""])),
    "--val-fraction": (st.floats(0.05, 0.5), FLOATS),
    "--patience": (st.integers(1, 3), st.integers(-1, 0)),
    "--nll-samples": (st.integers(0, 3), st.integers(-2, -1)),
    "--precision": (st.sampled_from(["fp32", "bf16"]), st.just("fp8")),
    "--log-every": (st.integers(1, 3), st.integers(-1, 0)),
    "--checkpoint-every": (st.integers(0, 3), st.just(-1)),
}


@st.composite
def finetune_command(draw: st.DrawFn, variant: zoo.Variant) -> list[str]:
    options = [f"{option}={mostly(draw, valid, invalid)}" for option, (valid, invalid) in FINETUNE_OPTIONS.items()
               if draw(st.integers(0, 2)) == 0]
    if draw(st.integers(0, 3)) == 0:
        options.append("--reset-head")
    hints, defaults = field_types(variant.config_class), config_to_dict(variant.default_config())
    for key in draw(st.lists(st.sampled_from(sorted(defaults)), max_size=2, unique=True)):
        options += ["--set", f"{key}={mostly(draw, text_for(hints.get(key), defaults[key]), WORDS)}"]
    return options


@pytest.mark.parametrize("name", zoo.list_variants())
def test_zoo_finetune_and_eval_give_folders_that_load_or_a_one_line_error(name: str) -> None:
    variant = zoo.get_variant(name)
    with tempfile.TemporaryDirectory(prefix="zoo-property-") as tmp:
        parent, data = Path(tmp) / "parent", data_file(Path(tmp), variant)
        zoo.create(name, variant.tiny_config()).save_pretrained(parent)

        @settings(SETTINGS, max_examples=5)
        @given(options=finetune_command(variant))
        def finetune(options: list[str]) -> None:
            with tempfile.TemporaryDirectory(prefix="zoo-property-", dir=tmp) as run_dir:
                out = Path(run_dir) / "out"
                code, _, stderr = run(["finetune", str(parent), "--data", str(data), "--out", str(out),
                                       "--no-progress", "--max-steps", "2", "--nll-samples", "2", *options])
                assert_zoo_outcome(code, stderr, out)
                if (out / "last" / "config.json").exists():
                    zoo.load(f"local-dir:{out / 'last'}")

        @settings(SETTINGS, max_examples=5)
        @given(data_draw=st.data())
        def evaluate(data_draw: st.DataObject) -> None:
            draw = data_draw.draw
            options = [f"--nll-samples={mostly(draw, st.integers(0, 3), st.integers(-2, -1))}"]
            if draw(st.booleans()):
                options.append(f"--split={mostly(draw, st.sampled_from(['test', 'train']), WORDS)}")
            if draw(st.booleans()):
                options.append("--json")
            code, _, stderr = run(["eval", str(parent), "--data", str(data), *options])
            assert code in (0, 2), (code, stderr)
            if code == 2:
                assert stderr.startswith("zoo: error: ") and len(stderr.strip().splitlines()) == 1, stderr

        finetune()
        evaluate()
