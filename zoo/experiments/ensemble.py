"""Many beta-VAEs of one architecture, trained at once as one batched network.

A sweep over beta and seeds trains a dozen small models on the same kind of batch. One at a time, a GPU
spends most of each step launching small kernels; stacked (``torch.func.stack_module_state``) and run
under ``torch.func.vmap``, the models' layers become one batched kernel each, and one Adam over the stacked
parameters is exactly one Adam per model, because Adam's update is elementwise. Each model gets its own
batch, its own beta and its own noise.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from zoo.losses import check_unit_range, unit_range_checked
from zoo.registry import get_variant

#: The variants whose loss is reconstruction + beta x KL, the one the ensemble computes.
VARIANTS = ("vae", "beta-vae")


class _Terms(nn.Module):
    """The beta-VAE's two loss terms (batch means) as a module's forward, for ``functional_call``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.variant = get_variant("vae")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, reconstruction, kl, _ = self.variant.terms(self.model, x, None)
        return reconstruction.mean(), kl.mean()


class BetaVAEEnsemble:
    """``models`` (VAEs or beta-VAEs of one architecture; ``zoo.create`` names them) trained together, model ``i``
    minimising reconstruction + ``betas[i]`` x KL with Adam at ``lr``.

    ``randomness`` is vmap's: "different" draws each model's posterior noise apart (training), "same" one
    draw shared by all (a test can then repeat it model by model). ``capturable`` makes the optimiser's
    step capturable in a CUDA graph.
    """

    def __init__(self, models: Sequence[nn.Module], betas: Sequence[float], lr: float, *,
                 randomness: str = "different", capturable: bool = False) -> None:
        if len(models) != len(betas) or not models:
            raise ValueError(f"one beta per model: got {len(models)} models and {len(betas)} betas")
        others = sorted({getattr(m, "variant_name", "") for m in models} - set(VARIANTS))
        if others:
            raise ValueError(f"the ensemble trains the loss of {' and '.join(VARIANTS)} models (reconstruction + "
                             f"beta x KL), not {others}: make them with zoo.create('beta-vae', ...)")
        self.template = copy.deepcopy(models[0]).to("meta")
        self.params, self.buffers = stack_module_state(list(models))
        device = next(iter(self.params.values())).device
        self.betas = torch.tensor([float(b) for b in betas], device=device)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr, capturable=capturable)
        terms = _Terms(self.template)

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
            state = {f"model.{k}": v for k, v in {**params, **buffers}.items()}
            return functional_call(terms, state, (x,))

        self._terms = vmap(one, randomness=randomness)

    def __len__(self) -> int:
        return len(self.betas)

    def terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each model's reconstruction NLL and KL (two tensors of shape (M,)) on its batch ``x[i]``."""
        if self.template.config.likelihood == "bernoulli":
            check_unit_range(x)  # here, where it can raise: vmap cannot run a check that branches on the data
        with unit_range_checked():  # checked just above (or by the caller's unit_range_checked block)
            return self._terms(self.params, self.buffers, x)

    def step(self, x: Tensor) -> Tensor:
        """One Adam step of every model on its batch ``x[i]`` (x: (M, B, C, H, W)); each model's loss, detached."""
        reconstruction, kl = self.terms(x)
        losses = reconstruction + self.betas * kl
        self.optimizer.zero_grad(set_to_none=False)
        losses.sum().backward()  # the models share no parameter: the sum's gradient is each one's own
        self.optimizer.step()
        return losses.detach()

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a module of its own (a copy of its current weights), in eval mode."""
        module = copy.deepcopy(self.template).to_empty(device=self.betas.device)
        state = {k: v[i].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
        module.load_state_dict(state)
        return module.eval()
