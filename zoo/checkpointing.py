"""Training checkpoints that survive a crash: one safetensors file, written atomically.

A checkpoint holds everything a resumed run needs to continue exactly where the last one stopped:
the model's weights, every optimiser's state, the fp16 gradient scaler's state, the step, the epoch
and the batch within it, the data order generator's state at the start of that epoch, the global RNG
states of every training process, the running sums of the epoch's loss terms (averaged over the
processes), the history and (with validation) the best weights so far. Tensors go into the
safetensors body; everything else is JSON in its metadata. Nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.errors import CheckpointError
from zoo.folder import atomic_write

STATE_NAME = "trainer-state.safetensors"
FORMAT = "zoo-trainer-state/1"


@dataclass
class TrainerState:
    """Where a training run is: resumable position, history and the best epoch so far."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_epoch: int | None = None
    #: fp16: steps the gradient scaler skipped so far.
    skipped_steps: int = 0


def rng_state() -> dict[str, Tensor]:
    """This process's global RNG states: the CPU generator's and every CUDA device's."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def save_checkpoint(path: Path, state: TrainerState, model: torch.nn.Module,
                    optimizers: dict[str, torch.optim.Optimizer], order_at_epoch_start: Tensor,
                    epoch_sums: dict[str, Tensor], best_weights: dict[str, Tensor] | None,
                    train_config: dict[str, Any], *, scaler: torch.amp.GradScaler | None = None,
                    rng_states: list[dict[str, Tensor]] | None = None) -> None:
    """Write the checkpoint atomically: a reader sees the previous complete file or this one.

    ``rng_states`` holds every training process's :func:`rng_state`, in rank order (default: this
    process's alone).
    """
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_weights is not None:
        tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_weights.items()})
    tensors.update({f"sums.{k}": v.detach().cpu().reshape(1) for k, v in epoch_sums.items()})
    tensors["rng.order"] = order_at_epoch_start
    rng_states = rng_states or [rng_state()]
    for rank, states in enumerate(rng_states):
        tensors.update({f"{_rng_prefix(rank)}{k}": v for k, v in states.items()})
    optim_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entry in sd["state"].items():
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    meta = {"state": vars(state), "optimizers": optim_meta, "train_config": train_config,
            "scaler": None if scaler is None else scaler.state_dict(), "world_size": len(rng_states)}
    metadata = {"format": FORMAT, "json": json.dumps(meta)}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                    device: torch.device, *, scaler: torch.amp.GradScaler | None = None, rank: int = 0,
                    world_size: int = 1) -> tuple[TrainerState, Tensor, dict[str, Tensor], dict[str, Tensor] | None]:
    """Restore model, optimisers, the gradient scaler and process ``rank``'s RNGs in place; return
    (state, order generator state at the start of the epoch, the epoch's running loss sums, best
    weights or None).

    A checkpoint written by another number of processes is refused: each process's RNG stream and
    share of the data would differ from the interrupted run's.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    except Exception as err:
        raise CheckpointError(f"cannot read the training checkpoint {path}: {err}") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ae-zoo training checkpoint (format {metadata.get('format')!r})")
    meta = json.loads(metadata["json"])
    saved_world = meta.get("world_size", 1)
    if saved_world != world_size:
        raise CheckpointError(f"the checkpoint {path} was written by {saved_world} training process(es) and this run "
                              f"has {world_size}: resume with the same number (torchrun --nproc_per_node), or "
                              f"start a new run")

    def group(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict({k: v.to(device) for k, v in group("model.").items()}, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the checkpoint {path} does not fit this model: {err}") from err
    for name, opt in optimizers.items():
        saved = meta["optimizers"].get(name)
        if saved is None:
            raise CheckpointError(f"the checkpoint {path} has no state for optimiser {name!r}")
        state: dict[int, dict[str, Any]] = {}
        for key, value in group(f"optim.{name}.").items():
            idx, _, field_name = key.partition(".")
            state.setdefault(int(idx), {})[field_name] = value  # load_state_dict moves it to the param's device
        for idx, scalars in saved["scalars"].items():
            state.setdefault(int(idx), {}).update(scalars)
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    prefix = _rng_prefix(rank)
    torch.set_rng_state(tensors[f"{prefix}torch"])
    cuda = group(f"{prefix}cuda.")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda[k] for k in sorted(cuda, key=int)])
    best = group("best.") or None
    sums = {k: v.reshape(()).to(device) for k, v in group("sums.").items()}
    return TrainerState(**meta["state"]), tensors["rng.order"], sums, best


def read_train_config(path: Path) -> dict[str, Any]:
    """The ``TrainConfig`` (as a dict) that wrote the checkpoint ``path``; only its header is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"cannot read the training checkpoint {path}: {err}") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ae-zoo training checkpoint (format {metadata.get('format')!r})")
    return dict(json.loads(metadata["json"]).get("train_config") or {})


def _rng_prefix(rank: int) -> str:
    """Where process ``rank``'s RNG states are stored (rank 0 keeps the single-process names)."""
    return "rng." if rank == 0 else f"rng.rank{rank}."

