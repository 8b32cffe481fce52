"""Training logs: CSV and JSONL rows per logged step and per epoch that agree with TrainResult, picture
grids per epoch, TensorBoard events, one read of the device sums per row, and resumed runs that append."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from zoo.data import TensorData, load_dataset
from zoo.distributed import World

SETTINGS = dict(batch_size=64, lr=1e-3, seed=3, progress=False, device="cpu", max_shift=1)
TERMS = ["loss", "reconstruction", "kl", "neg_elbo"]


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", "train")  # 1438 rows: 23 batches of 64 per epoch


@pytest.fixture(scope="module")
def val() -> TensorData:
    return TensorData(load_dataset("digits", "test").x[:100])


def tiny(name: str = "vae") -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, zoo.get_variant(name).tiny_config())


def csv_rows(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), [{k: float(v) for k, v in row.items()} for row in reader]


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


def test_rows_per_logged_step_and_epoch_agree_with_the_result(digits: TensorData, val: TensorData,
                                                              tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = zoo.train(tiny(), digits, val_data=val, epochs=2, log_dir=str(logs), log_every=5, **SETTINGS)

    columns, rows = csv_rows(logs / "steps.csv")
    assert columns == ["step", "epoch", "window", "wall_time", *TERMS, "lr"]
    # every log_every steps, and at each epoch's end (steps 23 and 46)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 23, 25, 30, 35, 40, 45, 46]
    assert [r["epoch"] for r in rows] == [1] * 5 + [2] * 6
    assert [r["window"] for r in rows] == [5, 5, 5, 5, 3, 2, 5, 5, 5, 5, 1]
    assert all(r["lr"] == 1e-3 for r in rows)
    for epoch, means in enumerate(result.history, start=1):  # the windows weighted by their length: epoch means
        mine = [r for r in rows if r["epoch"] == epoch]
        for term in TERMS:
            weighted = sum(r[term] * r["window"] for r in mine) / sum(r["window"] for r in mine)
            assert weighted == pytest.approx(means[term], rel=1e-6), (epoch, term)
    assert without_time(jsonl_rows(logs / "steps.jsonl")) == without_time(rows)

    columns, epochs = csv_rows(logs / "epochs.csv")
    assert columns == ["epoch", "step", "wall_time", *(f"train_{t}" for t in TERMS), *(f"val_{t}" for t in TERMS)]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 23), (2, 46)]
    for row, train, validation in zip(epochs, result.history, result.val_history, strict=True):
        assert {t: row[f"train_{t}"] for t in TERMS} == pytest.approx(train, rel=1e-12)
        assert {t: row[f"val_{t}"] for t in TERMS} == pytest.approx(validation, rel=1e-12)

    for epoch in (1, 2):  # 8 inputs above their reconstructions; 64 samples, 8 a row (8x8 pixels, 2 of padding)
        with Image.open(logs / "reconstructions" / f"epoch-000{epoch}.png") as image:
            assert image.size == (82, 22)
        with Image.open(logs / "samples" / f"epoch-000{epoch}.png") as image:
            assert image.size == (82, 82)


def test_a_deterministic_autoencoder_gets_reconstructions_and_no_samples(digits: TensorData, tmp_path: Path) -> None:
    zoo.train(tiny("ae"), digits, epochs=1, log_dir=str(tmp_path), **SETTINGS)
    assert (tmp_path / "reconstructions" / "epoch-0001.png").is_file()
    assert not (tmp_path / "samples").exists()


def test_the_terms_are_read_once_per_row_not_once_per_step(digits: TensorData, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    mean = World.mean
    monkeypatch.setattr(World, "mean", lambda self, values: reads.append(values.shape) or mean(self, values))
    result = zoo.train(tiny(), digits, epochs=2, log_dir=str(tmp_path), log_every=10, **SETTINGS)
    assert result.steps == 46
    assert len(reads) == len(csv_rows(tmp_path / "steps.csv")[1]) == 6  # steps 10, 20, 23, 30, 40, 46
    assert set(reads) == {torch.Size([4])}  # all four terms in one tensor: one host sync per read


def test_a_resumed_run_appends_to_the_logs_without_repeating_a_step(digits: TensorData, val: TensorData,
                                                                    tmp_path: Path) -> None:
    settings = dict(SETTINGS, epochs=2, log_every=4, checkpoint_every=10)
    straight = tmp_path / "straight"
    zoo.train(tiny(), digits, val_data=val, log_dir=str(straight / "logs"), checkpoint_dir=str(straight), **settings)

    cut = tmp_path / "cut"
    zoo.train(tiny(), digits, val_data=val, max_steps=33, log_dir=str(cut / "logs"), checkpoint_dir=str(cut),
              **settings)
    before = jsonl_rows(cut / "logs" / "steps.jsonl")
    assert [r["step"] for r in before][-3:] == [30, 32, 33]  # logged past the last checkpoint (step 30)
    zoo.Trainer(tiny(), log_dir=str(cut / "logs"), checkpoint_dir=str(cut), **settings).fit(digits, val, resume=True)

    after = jsonl_rows(cut / "logs" / "steps.jsonl")
    steps = [r["step"] for r in after]
    assert steps == sorted(set(steps))  # no step twice
    assert after[:len(before) - 2] == before[:-2]  # appended: the rows up to the checkpoint are the first run's
    for name in ("steps", "epochs"):
        for suffix, read in ((".jsonl", jsonl_rows), (".csv", lambda p: csv_rows(p)[1])):
            resumed, uninterrupted = read(cut / "logs" / f"{name}{suffix}"), read(straight / "logs" / f"{name}{suffix}")
            assert without_time(resumed) == without_time(uninterrupted), name + suffix


def test_a_fresh_run_replaces_the_logs_of_an_earlier_one(digits: TensorData, tmp_path: Path) -> None:
    for max_steps in (12, 5):
        zoo.train(tiny(), digits, epochs=1, max_steps=max_steps, log_dir=str(tmp_path), log_every=5, **SETTINGS)
    assert [r["step"] for r in jsonl_rows(tmp_path / "steps.jsonl")] == [5]
    assert [r["step"] for r in csv_rows(tmp_path / "steps.csv")[1]] == [5]


def test_tensorboard_events_and_their_purge_on_resume(digits: TensorData, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import event_file_writer

    # The process's 10th and 11th event files: names that end .9 and .10 (in the same second, "10" < "9"
    # would put the resumed run's file first, as it did once in CI).
    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))

    settings = dict(SETTINGS, epochs=1, log_every=4, checkpoint_every=10, log_dir=str(tmp_path / "logs"),
                    checkpoint_dir=str(tmp_path))
    zoo.train(tiny(), digits, max_steps=14, **settings)  # logs steps 4, 8, 10, 12, 14; checkpoint at 10
    zoo.Trainer(tiny(), **settings).fit(digits, resume=True)

    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    assert {"train/loss", "train/kl", "lr", "epoch/train_loss"} <= set(events.Tags()["scalars"])
    rows = jsonl_rows(tmp_path / "logs" / "steps.jsonl")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in rows] == [4, 8, 10, 12, 16, 20, 23]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [23]
