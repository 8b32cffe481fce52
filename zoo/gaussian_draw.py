"""One reparameterised draw from a diagonal Gaussian and its closed-form KL to N(0, I), as one autograd node.

A VAE's training step spends most of its time, on a small model, dispatching operations and recording them
for autograd, not computing them (issue 19's overhead-bound workload: a 64-32-2 VAE at batch 16). The draw
z = mean + exp(logvar / 2) * eps and the KL 0.5 * (exp(logvar) + mean^2 - 1 - logvar) are twelve recorded
operations whose backward pass autograd builds from a dozen more. Their gradients have a short closed form:

    d/dmean:   g_z + g_kl * mean
    d/dlogvar: (g_z * exp(logvar / 2) * eps + g_kl * (exp(logvar) - 1)) / 2

so :class:`DrawAndKL` runs the same forward operations unrecorded (the draw and the KL are the same numbers,
bit for bit, as :meth:`~zoo.distributions.DiagonalGaussian.sample` and ``kl()`` give) and a backward of six.
torch's own pieces cannot do this: ``torch.distributions.Normal.rsample`` and ``kl_divergence`` record the
same dozen operations, and ``torch.compile`` (which fuses them) is a separate, opt-in path
(``TrainConfig.compile``) that keeps the plain operations. Checked against autograd's own gradients of the
plain operations by ``torch.autograd.gradcheck`` (tests/test_gaussian_draw.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class DrawAndKL(torch.autograd.Function):
    """(z, KL per example) from ``mean`` and ``logvar`` of shape (batch, *latent_shape) and the noise ``eps``
    of the same shape; the KL is to N(0, I), summed over the latent."""

    @staticmethod
    def forward(ctx: Any, mean: Tensor, logvar: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        noise = (0.5 * logvar).exp() * eps
        variance = logvar.exp()
        kl = 0.5 * (variance + mean.pow(2) - 1.0 - logvar)
        ctx.save_for_backward(mean, noise, variance)
        return mean + noise, kl.sum(-1) if kl.dim() == 2 else kl.flatten(1).sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_z: Tensor, grad_kl: Tensor) -> tuple[Tensor, Tensor, None]:
        mean, noise, variance = ctx.saved_tensors
        grad_kl = grad_kl.view(-1, *([1] * (mean.dim() - 1)))
        grad_mean = torch.addcmul(grad_z, grad_kl, mean)
        grad_logvar = torch.addcmul(grad_z * noise, grad_kl, variance - 1.0).mul_(0.5)
        return grad_mean, grad_logvar, None


def fused_draw_applies(mean: Tensor) -> bool:
    """Whether :class:`DrawAndKL` gives what the plain operations would: not while ``torch.compile`` traces
    (inductor fuses the plain operations itself), not inside ``torch.func`` transforms (``vmap`` over an
    ensemble of models: the node defines no vmap rule; torch's own check, as ``Function.apply`` makes it), and
    not under autocast or for a half-precision posterior (there the plain KL is computed in float32 from
    low-precision inputs: the node would change the dtypes)."""
    return (not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
            and mean.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(mean.device.type))
