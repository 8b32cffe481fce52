"""Training on several processes with ``torch.distributed``: one process per GPU (or CPU worker).

``torchrun --nproc_per_node N -m zoo train ...`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and calls
``torch.distributed.init_process_group`` (nccl on GPUs, gloo on the CPU) when ``WORLD_SIZE > 1``.
Several machines are torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing here changes.

- **Data**: every process holds the whole data set and draws the same shuffled order (the shared
  seed). ``batch_size`` is the *global* batch: process r trains on rows r, r + N, r + 2N, ... of each
  global batch (:meth:`World.shard`), which is exactly what ``DistributedSampler`` gives (rank r takes
  the order's indices r::N) batched with ``batch_size // N``. So N processes see the same global batches
  as one process does. A last global batch too small to give every process a row is dropped.
- **Gradients**: averaged across processes with one ``all_reduce`` per optimiser step, on each
  optimiser's gradients flattened into one buffer (:meth:`World.average_gradients`, called by
  :meth:`zoo.stepping.StepContext.step`), which is what ``DistributedDataParallel`` computes. The model
  is not wrapped in DDP: DDP syncs only inside ``.backward()`` after a forward through its wrapper, but
  the variants' losses call the model's own methods (``encode``, ``reconstruction_nll``, a discriminator),
  and VAE-GAN gives each network its own ``torch.autograd.grad``. One explicit all-reduce before every
  optimiser step serves single- and multi-optimiser variants alike, with no unused-parameter errors.
  Weights and buffers are broadcast from rank 0 at the start (as DDP does), and buffers (running
  statistics) again at every epoch end, before validation; checkpoints hold rank 0's.
- **Randomness**: the global RNG is seeded with ``seed + rank``, so each process draws its own noise
  (reparameterisation, augmentation); the data order generator uses the shared seed.
- **Writes**: only rank 0 writes checkpoints, logs, pictures and model folders; every process reads
  the checkpoint to resume. Epoch means and validation losses are all-reduced, so all processes agree
  on early stopping and the best epoch.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zoo.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files (rank 0)."""
        return self.rank == 0

    def shard(self, batch: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """This process's rows of a global batch: rows rank, rank + size, ... (DistributedSampler's split)."""
        if self.size == 1:
            return tuple(batch)
        return tuple(t[self.rank::self.size] for t in batch)

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over the processes (in place; returned for chaining)."""
        if self.size > 1:
            dist.all_reduce(values)
        return values

    def mean(self, values: Tensor) -> Tensor:
        """``values`` averaged over the processes."""
        return self.sum(values).div_(self.size) if self.size > 1 else values

    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Replace every gradient by its average over the processes: one all-reduce per dtype.

        Parameters without a gradient are skipped; every process computes the same graph, so the
        same ones are skipped everywhere and the flattened buffers line up.
        """
        if self.size == 1:
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = self.mean(torch.cat([g.reshape(-1) for g in grads]))
            for g, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(chunk.view_as(g))

    def broadcast(self, module: nn.Module, *, buffers_only: bool = False) -> None:
        """Overwrite ``module``'s weights and buffers (or only its buffers) with rank 0's."""
        if self.size == 1:
            return
        tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
        for t in tensors:
            dist.broadcast(t.detach(), src=0)

    def broadcast_tensor(self, tensor: Tensor) -> Tensor:
        """``tensor`` overwritten in place with rank 0's (returned for chaining)."""
        if self.size > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (small objects: RNG states)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def env_rank() -> int:
    """This process's rank as torchrun sets it (0 outside torchrun), before any process group exists."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(requested: str | torch.device | None) -> str | torch.device | None:
    """Under torchrun on GPUs, ``"auto"``/``"cuda"`` means this process's own GPU, ``cuda:LOCAL_RANK``."""
    if env_world_size() > 1 and str(requested) in ("auto", "None", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


def setup(device: torch.device) -> World:
    """The :class:`World` of this process; joins torchrun's process group when ``WORLD_SIZE > 1``.

    An already initialised group (the caller's own) is used as it is. A group initialised here is
    destroyed when the process exits.
    """
    size = env_world_size()
    if size == 1:
        return World()
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_group)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
