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
  the checkpoint to resume. ``zoo train``'s processes meet once more after rank 0 has written the
  model folder, so none tears the process group down while another still uses it. Epoch means and
  validation losses are all-reduced, so all processes agree on early stopping and the best epoch.
- **A process that stops answering** (stuck in I/O, out of memory, a dead machine) would leave the
  others waiting in their next collective. The process group is created with ``collective_timeout``
  (``TrainConfig``, ``--collective-timeout``; 10 minutes by default); a collective that times out is a
  :class:`~zoo.errors.CollectiveTimeoutError` naming the ranks that did not answer: every waiting
  process marks itself in torchrun's key-value store, and the ranks without a mark are the silent ones.
  Checkpoints are written only between collectives, so the last one is intact for ``--resume``. (With
  nccl, torch's watchdog may end the process at the timeout before this message: the wait is bounded
  all the same.)
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zoo.errors import CollectiveTimeoutError, ConfigError

#: The default ``collective_timeout`` in seconds: long enough for rank 0 to write a large checkpoint or
#: a picture grid while the others wait, short enough that a hung process is noticed in minutes.
DEFAULT_TIMEOUT = 600.0
#: How long a process that timed out waits for the other waiting ones to mark themselves in the store.
MARK_WAIT = 5.0
#: Whether :func:`setup` created this process's process group (then :func:`end_process` ends the process).
_OWN_GROUP = [False]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    #: Seconds a collective waits for the other processes before :class:`CollectiveTimeoutError`.
    timeout: float = DEFAULT_TIMEOUT

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
            self._collective("all_reduce", lambda: dist.all_reduce(values))
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
            self._collective("broadcast", lambda t=t: dist.broadcast(t.detach(), src=0))

    def broadcast_tensor(self, tensor: Tensor) -> Tensor:
        """``tensor`` overwritten in place with rank 0's (returned for chaining)."""
        if self.size > 1:
            self._collective("broadcast", lambda: dist.broadcast(tensor, src=0))
        return tensor

    def barrier(self) -> None:
        """Wait until every process has come here (bounded by the collective timeout)."""
        if self.size > 1:
            self._collective("barrier", dist.barrier)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (small objects: RNG states)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        self._collective("all_gather_object", lambda: dist.all_gather_object(out, obj))
        return out

    def _collective(self, name: str, call: Callable[[], Any]) -> Any:
        """``call()``; a timeout becomes a CollectiveTimeoutError naming the ranks that did not answer."""
        try:
            return call()
        except RuntimeError as err:  # gloo: "Timed out waiting 3000ms for recv operation"; DistBackendError too
            if "timed out" not in str(err).lower() and "timeout" not in str(err).lower():
                raise
            silent = self._silent_ranks()
            who = (f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))}" if silent
                   else "another process")
            raise CollectiveTimeoutError(f"rank {self.rank}: no answer from {who} within {self.timeout:g} s "
                                         f"({name})") from err

    def _silent_ranks(self) -> list[int]:
        """The ranks that did not mark themselves in the store as waiting too (empty: unknown)."""
        try:
            store = dist.distributed_c10d._get_default_store()
            store.set(f"zoo/waiting/{self.rank}", "1")
            others = [r for r in range(self.size) if r != self.rank]
            deadline = time.monotonic() + min(MARK_WAIT, self.timeout)
            while True:
                silent = [r for r in others if not store.check([f"zoo/waiting/{r}"])]
                if not silent or time.monotonic() > deadline:
                    return silent
                time.sleep(0.1)
        except (RuntimeError, AttributeError, ValueError):  # no store to ask (another launcher)
            return []


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


def setup(device: torch.device, timeout: float = DEFAULT_TIMEOUT) -> World:
    """The :class:`World` of this process; joins torchrun's process group when ``WORLD_SIZE > 1``, with
    collectives that give up after ``timeout`` seconds.

    An already initialised group (the caller's own) is used as it is, with its own timeout. A group
    initialised here is destroyed when the process exits.
    """
    size = env_world_size()
    if size == 1:
        return World(timeout=timeout)
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
        atexit.register(_destroy_group)
        _OWN_GROUP[0] = True
    return World(rank=dist.get_rank(), size=dist.get_world_size(), timeout=timeout)


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> int:
    """How a ``zoo`` command's process ends: ``code`` returned as it is, except in a process that joined
    a process group in :func:`setup`, which tears the group down, flushes its output and ends at once
    (``os._exit(code)``) instead of returning.

    Why: with gloo, a worker that had finished all its work and left every Python frame was seen to die
    with SIGABRT ("terminate called without an active exception") during the interpreter's C++ teardown,
    about one run in ten on a loaded 2-core machine; torchrun then reports the whole run as failed.
    Nothing is left to do once the group is down, so the teardown is skipped.
    """
    if not _OWN_GROUP[0]:
        return code
    _destroy_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
