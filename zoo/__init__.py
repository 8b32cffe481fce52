"""ae-zoo: a plugin-based model zoo of autoencoders for PyTorch.

    import zoo
    zoo.list_variants()                     # ['ae', 'beta-vae', 'cae', 'cvae', ...]
    model = zoo.create("vae", latent_dim=8)
    zoo.train(model, "mnist", epochs=5)
    model.save_pretrained("runs/my-vae")
    model = zoo.load("local-dir:runs/my-vae")      # or zoo.from_pretrained("runs/my-vae")

Public names are imported lazily, so ``import zoo`` does not pull in torchvision, timm,
matplotlib or huggingface_hub.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Variant": "zoo.variant",
    "LossOutput": "zoo.variant",
    "CheckpointRef": "zoo.checkpoints",
    "ZooModel": "zoo.model",
    "Posterior": "zoo.distributions",
    "DiagonalGaussian": "zoo.distributions",
    "PointMass": "zoo.distributions",
    "QuantizedCode": "zoo.distributions",
    "list_variants": "zoo.registry",
    "get_variant": "zoo.registry",
    "create": "zoo.registry",
    "list_checkpoints": "zoo.registry",
    "get_checkpoint": "zoo.registry",
    "load": "zoo.registry",
    "from_pretrained": "zoo.registry",
    "list_samplers": "zoo.samplers",
    "get_sampler": "zoo.samplers",
    "train": "zoo.training",
    "Trainer": "zoo.training",
    "TrainConfig": "zoo.training",
    "finetune": "zoo.finetuning",
    "evaluate": "zoo.evaluation",
    "register_plugin": "zoo.plugins",
    "unregister_plugin": "zoo.plugins",
    "reload_plugins": "zoo.plugins",
}

__all__ = ["__version__", "hookimpl", *_LAZY]

if TYPE_CHECKING:
    from zoo.checkpoints import CheckpointRef
    from zoo.distributions import DiagonalGaussian, PointMass, Posterior, QuantizedCode
    from zoo.evaluation import evaluate
    from zoo.finetuning import finetune
    from zoo.model import ZooModel
    from zoo.plugins import register_plugin, reload_plugins, unregister_plugin
    from zoo.registry import (
        create,
        from_pretrained,
        get_checkpoint,
        get_variant,
        list_checkpoints,
        list_variants,
        load,
    )
    from zoo.samplers import get_sampler, list_samplers
    from zoo.training import TrainConfig, Trainer, train
    from zoo.variant import LossOutput, Variant


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
