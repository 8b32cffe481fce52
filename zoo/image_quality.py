"""Image-quality numbers of an autoencoder's reconstructions: PSNR and SSIM (torchmetrics), and a Frechet
distance in the feature space of a network the user supplies.

The zoo does not bundle a feature network for Frechet distances of natural images: the usual one,
Inception-v3 (the FID), cannot be downloaded offline, and a distance in another network's space is not the
FID. :func:`reconstruction_frechet_distance` takes whatever network the user has (any torch or timm module
mapping images to feature vectors) and says so in its result. The MNIST models' sample quality has its own
bundled classifier (:mod:`zoo.sample_quality`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from zoo.contract import reconstruct
from zoo.data import TensorData

#: Images reconstructed at once (bounds memory, not results).
BATCH = 64


def _reconstructions(model: nn.Module, data: TensorData) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs, eval-mode reconstructions clamped to [0, 1]) batch by batch, float32 on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for batch in data.batches(BATCH, shuffle=False):
            x = batch[0].to(device)
            y = batch[1].to(device) if len(batch) > 1 else None
            yield x.float(), reconstruct(model, x, y).float().clamp(0, 1)


def reconstruction_quality(model: nn.Module, data: TensorData) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM (11x11 Gaussian window, sigma 1.5) of ``model``'s reconstructions of ``data``
    over examples, images in [0, 1] (torchmetrics' implementations, per image then averaged)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    psnr, ssim, count = 0.0, 0.0, 0
    for x, recon in _reconstructions(model, data):
        psnr += float(peak_signal_noise_ratio(recon, x, data_range=1.0, reduction="none", dim=(1, 2, 3)).sum())
        ssim += float(structural_similarity_index_measure(recon, x, data_range=1.0, reduction="none").sum())
        count += len(x)
    return {"psnr": psnr / count, "ssim": ssim / count}


def reconstruction_frechet_distance(model: nn.Module, data: TensorData,
                                    features: nn.Module | Callable[[Tensor], Tensor]) -> dict[str, float | str]:
    """The Frechet distance between Gaussians fitted to ``features`` of the data and of its reconstructions
    (an "rFID" when ``features`` is Inception-v3's pool layer; otherwise a distance in that network's space,
    not comparable with published FIDs). ``features`` maps images in [0, 1] to (B, F) vectors (a (B, F, h, w)
    output is averaged over positions)."""
    from zoo.sample_quality import frechet_distance

    params = next(iter(features.parameters()), None) if isinstance(features, nn.Module) else None
    device = None if params is None else params.device  # the feature network may sit on another device
    real, fake = [], []
    with torch.no_grad():
        for x, recon in _reconstructions(model, data):
            real.append(_vectors(features(x if device is None else x.to(device))).cpu())
            fake.append(_vectors(features(recon if device is None else recon.to(device))).cpu())
    name = type(features).__name__
    return {"frechet_distance": frechet_distance(torch.cat(real), torch.cat(fake)), "feature_network": name}


def _vectors(out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """A feature network's output as (B, F): the last map of a list, spatial maps averaged over positions."""
    if isinstance(out, list | tuple):
        out = out[-1]
    return (out.flatten(2).mean(-1) if out.dim() > 2 else out).double()
