"""The plugin hooks. A plugin module implements any of them with ``@zoo.hookimpl``.

Hooks hand over **objects**: a plugin calls ``register(...)`` once per variant, checkpoint or sampler.
Per-variant behaviour (architecture, loss, training step) lives on the ``Variant`` object, not in
hooks, so pluggy is only used for discovery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from zoo.checkpoints import CheckpointRef
    from zoo.samplers import Sampler
    from zoo.variant import Variant

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_register_variants(register: Callable[[Variant], None]) -> None:
    """Register model variants: call ``register(MyVariant())`` for each.

    A name already registered by another plugin is an error that names both plugins.
    """


@hookspec
def zoo_register_checkpoints(register: Callable[[CheckpointRef], None]) -> None:
    """Register pretrained checkpoints: call ``register(CheckpointRef(...))`` for each.

    A checkpoint points at a bundled folder (``config.json``, ``model.safetensors``, ``README.md``)
    and/or a Hugging Face Hub repo id with a pinned revision.
    """


@hookspec
def zoo_register_samplers(register: Callable[[Sampler], None]) -> None:
    """Register ex-post samplers: call ``register(MySampler())`` for each.

    A sampler fits a density to a trained model's codes and draws new ones (``model.fit_sampler(NAME, data)``,
    ``model.sample(n, sampler=NAME)``); see :class:`zoo.samplers.Sampler`.
    """
