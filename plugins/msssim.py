"""The MS-SSIM VAE (Snell et al. 2017, "Learning to generate images with perceptual similarity metrics"): a VAE
whose reconstruction term is the multi-scale structural dissimilarity of the decoded mean to the image instead
of a pixel-wise likelihood:

    L = w * (1 - MS-SSIM(x, f(z))) + KL(q(z|x) || N(0, I)),  z ~ q(z|x),

with MS-SSIM from torchmetrics (Wang et al. 2003's multi-scale index, per image). Small images have room for few
scales: the default takes three (a 7x7 Gaussian window, sigma 1.5) with the first three of Wang et al.'s five
scale weights renormalised, which 28x28 digits admit ((7 - 1) x 2^2 = 24 < 28). ``w`` puts the term on the scale
of a sum over pixels (784 for MNIST). The decoder is the VAE's, so the zoo's pixel-space ELBO and NLL still
apply to it, but they are not what it was trained for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.variant import Batch, LossOutput, split_batch

#: The first three of Wang et al.'s five MS-SSIM scale weights (0.0448, 0.2856, 0.3001), renormalised to sum to 1.
THREE_SCALES = (0.0711, 0.4530, 0.4760)


@dataclass
class MSSSIMVAEConfig(VAEConfig):
    #: w, the weight of 1 - MS-SSIM per example.
    ssim_weight: float = 784.0
    #: Side of the Gaussian window, and its sigma.
    kernel_size: int = 7
    sigma: float = 1.5
    #: The weight of each scale, finest first (their number is the number of scales).
    scale_weights: tuple[float, ...] = THREE_SCALES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("ssim_weight", "kernel_size", "sigma", "scale_weights"))
        if self.likelihood != "bernoulli":
            raise ConfigError("ms-ssim-vae compares images in [0, 1]: its decoder is the Bernoulli one "
                              "(likelihood='bernoulli'), whose mean is the reconstruction")
        side = min(self.input_shape[1:])
        needed = (self.kernel_size - 1) * 2 ** (len(self.scale_weights) - 1)
        if side <= needed:
            raise ConfigError(f"{len(self.scale_weights)} scales with a {self.kernel_size}-pixel window need images "
                              f"larger than {needed} pixels a side, got {side}: use fewer scale_weights or a smaller "
                              f"kernel_size")


def ms_ssim(model: VAEModel, x: Tensor, reconstruction: Tensor) -> Tensor:
    """MS-SSIM of each reconstruction to its image (B,), in float32 (torchmetrics, data range 1)."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    cfg = model.config
    # On the CPU, oneDNN's backward of the grouped Gaussian convolution costs about 3x PyTorch's own (measured
    # here: 0.3 s against 0.1 s for a batch of 128 digits), so it is switched off around the index.
    # (None: leave oneDNN's other flags as they are.)
    onednn = torch.backends.mkldnn.flags(enabled=torch.backends.mkldnn.enabled and x.device.type != "cpu",
                                         deterministic=None, allow_tf32=None,
                                         fp32_precision=None)
    with onednn:
        return multiscale_structural_similarity_index_measure(
            reconstruction.float(), x.float(), kernel_size=cfg.kernel_size, sigma=cfg.sigma,
            betas=tuple(cfg.scale_weights), data_range=1.0, reduction="none")


class MSSSIMVAEVariant(VAEVariant):
    """MS-SSIM VAE: L = w (1 - MS-SSIM(x, f(z))) + KL."""

    name = "ms-ssim-vae"
    config_class = MSSSIMVAEConfig
    description = "VAE with a multi-scale structural-similarity reconstruction term (Snell et al. 2017)"
    metric_names = {"ms_ssim": "MS-SSIM of the deterministic reconstructions to the test images (the index it "
                               "trains on: 3 scales, 7x7 window; 1 = identical)"}

    def tiny_config(self) -> MSSSIMVAEConfig:
        return MSSSIMVAEConfig(input_shape=(1, 16, 16), latent_dim=4, hidden_dims=(32,), kernel_size=3,
                               scale_weights=(0.5, 0.5))

    def loss(self, model: VAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, y = split_batch(batch)
        posterior = model.encode(x, y)
        similarity = ms_ssim(model, x, model.decode(posterior.sample(), y))
        dissimilarity = model.config.ssim_weight * (1 - similarity).mean()
        kl = model.example_kl(posterior).mean()
        return LossOutput(dissimilarity + kl, {"dissimilarity": dissimilarity, "kl": kl, "ms_ssim": similarity.mean()})

    def metrics(self, model: VAEModel, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        device = next(model.parameters()).device
        values = [ms_ssim(model, x.to(device), model(x.to(device))) for (x, *_) in data.batches(256, shuffle=False)]
        return {"ms_ssim": float(torch.cat(values).mean())}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(MSSSIMVAEVariant())
