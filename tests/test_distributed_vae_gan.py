"""VAE-GAN on 2 processes under torchrun with fp16: three optimisers stepped with gradients from
torch.autograd.grad, averaged across processes, and one gradient scaler."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torchrun_zoo import torchrun

import zoo
from zoo.checkpointing import STATE_NAME
from zoo.training import seed_everything


def test_vae_gan_fp16_on_two_processes(tmp_path: Path) -> None:
    """Both processes end with the same finite weights; only rank 0 writes; the scaler's state is checkpointed."""
    args = ["train", "vae-gan", "--data", "digits", "--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[8,16]",
            "--set", "discriminator_dims=[8,16]", "--set", "latent_dim=4", "--batch-size", "32", "--max-steps", "6",
            "--no-progress", "--precision", "fp16", "--checkpoint-every", "3", "--out", "out"]
    rank0, rank1, _ = torchrun(tmp_path, args)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert all(torch.isfinite(v).all() for v in rank0.values())
    seed_everything(0)  # zoo train --seed 0 seeds the initial weights
    start = zoo.create("vae-gan", input_shape=(1, 8, 8), hidden_dims=(8, 16), discriminator_dims=(8, 16),
                       latent_dim=4).state_dict()
    for net in ("encoder", "decoder", "discriminator"):  # every optimiser stepped: not all skipped by the scaler
        assert any(not torch.equal(rank0[k], start[k]) for k in rank0 if k.startswith(f"{net}.")), net
    with safe_open(str(tmp_path / "rank0" / "out" / "checkpoints" / STATE_NAME), framework="pt") as f:
        meta = json.loads(f.metadata()["json"])
    assert meta["scaler"]["scale"] > 0 and meta["state"]["step"] == 6
    assert list((tmp_path / "rank1").iterdir()) == []
