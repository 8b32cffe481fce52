"""Training on several processes: real 2-process gloo runs of ``zoo train`` under torchrun (CPU), against
one process on the same global batches; the data shards; per-process RNG streams in checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler
from torchrun_zoo import torchrun

import zoo
from zoo.checkpointing import STATE_NAME, TrainerState, load_checkpoint, rng_state, save_checkpoint
from zoo.data import TensorData
from zoo.distributed import World
from zoo.errors import CheckpointError, ConfigError

TINY_AE = ["ae", "--data", "digits", "--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[16]", "--set",
           "latent_dim=2", "--batch-size", "64", "--no-progress", "--log-every", "5", "--checkpoint-every", "10"]


def single_process(out: Path, args: list[str]) -> dict[str, torch.Tensor]:
    from zoo.cli import main

    assert main(["train", *args, "--out", str(out)]) == 0
    return load_file(str(out / "model.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def steps(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "logs" / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, str]:
    """25 steps of a tiny autoencoder as 2 processes: 23 full batches of 64 (32 rows each), then the next
    epoch; checkpoints at steps 10, 20 and 23 (the end of the first epoch)."""
    workdir = tmp_path_factory.mktemp("ddp")
    rank0, rank1, stdout = torchrun(workdir, ["train", *TINY_AE, "--out", "out", "--epochs", "2", "--max-steps", "25"])
    return workdir, rank0, rank1, stdout


def test_two_processes_train_like_one_on_the_same_global_batches(two_process_run, tmp_path: Path) -> None:
    workdir, rank0, rank1, _ = two_process_run
    assert_same(rank0, rank1)  # every step averaged the same gradients on both
    assert_same(rank0, load_file(str(workdir / "rank0" / "out" / "model.safetensors")))
    one = single_process(tmp_path / "one", [*TINY_AE, "--epochs", "2", "--max-steps", "25"])
    assert_close(rank0, one)  # a deterministic autoencoder: the same updates up to the order of float sums
    two_rows, one_rows = steps(workdir / "rank0" / "out"), steps(tmp_path / "one")
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] == [5, 10, 15, 20, 23, 25]
    for mine, theirs in zip(two_rows, one_rows, strict=True):  # the logged means are over both processes
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


def test_only_rank_0_writes(two_process_run) -> None:
    workdir, _, _, stdout = two_process_run
    assert list((workdir / "rank1").iterdir()) == []
    out = workdir / "rank0" / "out"
    assert {p.name for p in out.iterdir()} == {"README.md", "config.json", "model.safetensors", "checkpoints", "logs"}
    assert (out / "checkpoints" / STATE_NAME).is_file() and (out / "logs" / "steps.csv").is_file()
    assert stdout.count("wrote ") == 1
    assert "`processes`: 2" in (out / "README.md").read_text()
    left = float((workdir / "dump" / "rank1.left").read_text())
    assert left >= (out / "README.md").stat().st_mtime  # rank 1 waited for rank 0's writes before exiting


def test_every_process_resumes_from_the_checkpoint(two_process_run, tmp_path: Path) -> None:
    workdir, _, _, _ = two_process_run
    out = tmp_path / "out"
    shutil.copytree(workdir / "rank0" / "out", out)  # stopped at step 25; checkpoint at step 23
    with safe_open(str(out / "checkpoints" / STATE_NAME), framework="pt") as f:
        meta = json.loads(f.metadata()["json"])
        assert meta["state"]["step"] == 23 and meta["world_size"] == 2
        assert {"rng.torch", "rng.rank1.torch"} <= set(f.keys())
    rank0, rank1, _ = torchrun(tmp_path / "run", ["train", *TINY_AE, "--out", str(out), "--epochs", "2", "--resume"])
    assert_same(rank0, rank1)
    one = single_process(tmp_path / "one", [*TINY_AE, "--epochs", "2"])
    assert_close(rank0, one)
    logged = [r["step"] for r in steps(out)]
    assert logged == [5, 10, 15, 20, 23, 25, 30, 35, 40, 45, 46]  # step 25 of the first run dropped, then logged again


# -- without a process group ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "world"), [(54, 3), (64, 2), (60, 4)])
def test_shards_are_distributed_sampler_shards(n: int, world: int) -> None:
    """Rank r's rows over an epoch are DistributedSampler's (indices r::world of the shared order), batched by
    batch_size // world, so the processes together train on the global batches one process would."""
    batch_size = 12
    data = TensorData(torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    for rank in range(world):
        shards = [World(rank, world).shard(batch)[0].flatten().long()
                  for batch in data.batches(batch_size, generator=torch.Generator().manual_seed(5))]
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert torch.equal(torch.cat(shards), order[list(sampler)])
        assert {len(s) for s in shards[:-1]} == {batch_size // world}


def test_the_global_batch_must_divide_among_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zoo.training.setup", lambda device, timeout: World(0, 3))
    with pytest.raises(ConfigError, match="batch_size 64 is the global batch and must divide evenly among the 3"):
        zoo.Trainer(zoo.create("ae", zoo.get_variant("ae").tiny_config()), batch_size=64, device="cpu")
    trainer = zoo.Trainer(zoo.create("ae", zoo.get_variant("ae").tiny_config()), batch_size=12, device="cpu")
    assert trainer._batches_per_epoch(TensorData(torch.rand(50, 1, 8, 8))) == 4  # a last batch of 2 rows: dropped
    assert trainer._batches_per_epoch(TensorData(torch.rand(51, 1, 8, 8))) == 5  # 3 rows: one for each process


def test_each_process_resumes_its_own_rng_stream(tmp_path: Path) -> None:
    model = zoo.create("ae", zoo.get_variant("ae").tiny_config())
    optimizers = zoo.get_variant("ae").configure_optimizers(model, zoo.TrainConfig())
    torch.manual_seed(1)
    streams = [rng_state()]
    torch.manual_seed(2)
    streams.append(rng_state())
    path = tmp_path / STATE_NAME
    save_checkpoint(path, TrainerState(), model, optimizers, torch.Generator().get_state(), {}, None,
                    {}, rng_states=streams)
    for rank, seed in ((0, 1), (1, 2)):
        load_checkpoint(path, model, optimizers, torch.device("cpu"), rank=rank, world_size=2)
        drawn = torch.rand(3)
        torch.manual_seed(seed)
        assert torch.equal(drawn, torch.rand(3))
    with pytest.raises(CheckpointError, match="written by 2 training process.*this run has 1"):
        load_checkpoint(path, model, optimizers, torch.device("cpu"))


# -- a process that stops answering (issue 14, item 13) ---------------------------------------------------------------

HANG = """
import os, sys, time
import zoo.variant
from zoo.cli import main

if os.environ["RANK"] == "1":  # rank 1 stops answering at step 12, as a process stuck in I/O or a dead GPU would
    original = zoo.variant.Variant.train_step

    def train_step(self, model, batch, optimizers, *, step):
        if step == 12:
            time.sleep(120)
        return original(self, model, batch, optimizers, step=step)

    zoo.variant.Variant.train_step = train_step
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_rank_that_stops_answering_ends_the_run_naming_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    script, out = tmp_path / "hang.py", tmp_path / "out"
    script.write_text(HANG)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "--monitor-interval", "0.1", str(script), "train", *TINY_AE, "--out", str(out),
                          "--epochs", "2", "--checkpoint-every", "5", "--collective-timeout", "3"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    assert run.returncode != 0
    assert time.time() - started < 60  # the timeout, not the 120 s sleep, ended it
    expected = "zoo: error: rank 0: no answer from rank 1 within 3 s (all_reduce) at step 12; the run stops."
    assert expected in run.stderr, run.stderr[-3000:]
    assert "--resume" in run.stderr
    with safe_open(str(out / "checkpoints" / STATE_NAME), framework="pt") as f:  # intact, for --resume
        assert json.loads(f.metadata()["json"])["state"]["step"] == 10


def test_the_collective_timeout_is_a_checked_setting() -> None:
    assert zoo.TrainConfig().collective_timeout == 600.0  # minutes, not torch's default of 30 (gloo) or hours
    with pytest.raises(ConfigError, match="collective_timeout must be greater than 0"):
        zoo.TrainConfig(collective_timeout=0.0)
