"""Deterministic autoencoders: undercomplete, overcomplete, denoising, sparse and contractive.

Every loss follows the zoo convention: summed over one example's dimensions, averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import zoo
from zoo.config import check_fields
from zoo.distributions import PointMass, generator_kwargs
from zoo.errors import ConfigError
from zoo.losses import bernoulli_kl, reconstruction_nll
from zoo.model import ZooModel
from zoo.nets import Decoder, Encoder, activation
from zoo.variant import Batch, LossOutput, Variant, split_batch


@dataclass
class AutoencoderConfig:
    """Architecture and reconstruction loss of a deterministic autoencoder."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (512, 256)
    architecture: str = "mlp"
    activation: str = "relu"
    #: Applied to the code; "identity" for a linear code, "sigmoid" for the sparse AE's units.
    code_activation: str = "identity"
    #: "bernoulli" (binary cross-entropy, data in [0, 1]) or "mse" (squared error).
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_fields(self, positive=("input_shape", "latent_dim", "hidden_dims"))
        if self.likelihood not in ("bernoulli", "mse"):
            raise ConfigError(f"autoencoders reconstruct with 'bernoulli' (BCE) or 'mse', not {self.likelihood!r}")


class Autoencoder(ZooModel):
    """x -> code = g(x) -> reconstruction f(code). ``encode`` returns the code as a point mass."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config.input_shape, config.hidden_dims, config.latent_dim,
                               config.architecture, config.activation)
        self.code_activation = (torch.nn.Identity() if config.code_activation == "identity"
                                else activation(config.code_activation))
        self.decoder = Decoder(config.latent_dim, config.hidden_dims, config.input_shape,
                               config.architecture, config.activation)

    def code(self, x: Tensor) -> Tensor:
        """The code g(x), (B, latent_dim)."""
        return self.code_activation(self.encoder(x))

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        return PointMass(self.code(x))

    def encode_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The code plus every hidden activation of the encoder (for the sparsity penalty)."""
        features, hidden = self.encoder.forward_hidden(x)
        return self.code_activation(features), hidden

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder output before the output activation: logits (bernoulli) or values (mse)."""
        return self.decoder(z)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def reconstruction_nll(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The reconstruction error per example: BCE (the Bernoulli NLL, nats) or the squared error (mse).
        ``z`` may carry leading sample dims."""
        lead = z.shape[:-1]
        logits = self.decode_logits(z.reshape(-1, z.shape[-1])).reshape(*lead, *self.config.input_shape)
        return reconstruction_nll(logits, x, self.config.likelihood)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.code(x))


class AutoencoderVariant(Variant):
    """Undercomplete autoencoder: L = mean over the batch of the reconstruction error."""

    name = "ae"
    config_class = AutoencoderConfig
    description = "Undercomplete autoencoder (code smaller than the input), MSE or BCE reconstruction"
    has_likelihood = True

    def build(self, config: AutoencoderConfig) -> Autoencoder:
        self.check_config(config)
        return Autoencoder(config)

    def check_config(self, config: AutoencoderConfig) -> None:
        pass

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        recon = model.reconstruction_nll(x, model.code(x)).mean()
        return LossOutput(recon, {"reconstruction": recon})


@dataclass
class OvercompleteConfig(AutoencoderConfig):
    latent_dim: int = 1024
    #: L1 penalty on the code per example; an overcomplete code without a regulariser can learn
    #: the identity map.
    code_l1: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, non_negative=("code_l1",))


class OvercompleteVariant(AutoencoderVariant):
    """Overcomplete autoencoder: code larger than the input, kept from copying by an L1 code penalty."""

    name = "overcomplete-ae"
    config_class = OvercompleteConfig
    description = "Overcomplete autoencoder (code larger than the input) with an L1 code penalty"

    def tiny_config(self) -> OvercompleteConfig:
        return OvercompleteConfig(input_shape=(1, 4, 4), latent_dim=32, hidden_dims=(32,))

    def check_config(self, config: OvercompleteConfig) -> None:
        c, h, w = config.input_shape
        if config.latent_dim <= c * h * w:
            raise ConfigError(f"overcomplete-ae needs latent_dim > input size {c * h * w}, got {config.latent_dim}; "
                              f"use the 'ae' variant for a smaller code")

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        code = model.code(x)
        recon = model.reconstruction_nll(x, code).mean()
        l1 = code.abs().sum(1).mean()
        return LossOutput(recon + model.config.code_l1 * l1, {"reconstruction": recon, "code_l1": l1})


@dataclass
class DenoisingConfig(AutoencoderConfig):
    likelihood: str = "mse"
    #: Standard deviation of additive Gaussian noise (0 disables it).
    noise_std: float = 0.3
    #: Probability of zeroing each input element (masking noise; 0 disables it).
    mask_prob: float = 0.0
    #: Clip the corrupted input to [0, 1] (keeps it in the data range of images).
    clip: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, non_negative=("noise_std", "mask_prob"))
        if self.mask_prob > 1:
            raise ConfigError(f"mask_prob is a probability: it must lie in [0, 1], got {self.mask_prob}")


class DenoisingVariant(AutoencoderVariant):
    """Denoising autoencoder: L = mean over the batch of ||x - f(g(x~))||^2, x~ a corruption of x."""

    name = "dae"
    config_class = DenoisingConfig
    description = "Denoising autoencoder: reconstruct the clean input from a corrupted one"

    def corrupt(self, x: Tensor, config: DenoisingConfig, generator: torch.Generator | None = None) -> Tensor:
        """x~: Gaussian noise and/or masking, as configured."""
        noisy = x
        if config.noise_std > 0:
            eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, **generator_kwargs(generator))
            noisy = noisy + config.noise_std * eps
        if config.mask_prob > 0:
            keep = torch.rand(x.shape, device=x.device, **generator_kwargs(generator)) >= config.mask_prob
            noisy = noisy * keep
        return noisy.clamp(0, 1) if config.clip else noisy

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        noisy = self.corrupt(x, model.config) if model.training else x
        recon = model.reconstruction_nll(x, model.code(noisy)).mean()
        return LossOutput(recon, {"reconstruction": recon})


@dataclass
class SparseConfig(AutoencoderConfig):
    activation: str = "sigmoid"
    code_activation: str = "sigmoid"
    #: Target mean activation rho of every hidden unit.
    sparsity_target: float = 0.05
    #: Weight beta of the KL sparsity penalty.
    sparsity_weight: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, non_negative=("sparsity_weight",))
        if not 0 < self.sparsity_target < 1:
            raise ConfigError(f"sparsity_target must lie in (0, 1), got {self.sparsity_target}")


class SparseVariant(AutoencoderVariant):
    """Sparse autoencoder: L = reconstruction + beta * sum_l sum_j KL(rho || rho_hat_j).

    rho_hat_j is unit j's mean activation over the batch; the sum runs over every hidden layer of
    the encoder and the code. Units must be in (0, 1), so activations default to sigmoid.
    """

    name = "sae"
    config_class = SparseConfig
    description = "Sparse autoencoder: KL(rho || rho_hat) penalty on mean hidden activations"

    def check_config(self, config: SparseConfig) -> None:
        if config.activation != "sigmoid" or config.code_activation != "sigmoid":
            raise ConfigError("the sparse autoencoder's KL penalty needs activations in (0, 1): "
                              "keep activation='sigmoid' and code_activation='sigmoid'")

    def sparsity_penalty(self, hidden: list[Tensor], rho: float) -> Tensor:
        """sum over layers and units of KL(Bernoulli(rho) || Bernoulli(mean activation over the batch))."""
        return sum(bernoulli_kl(rho, h.flatten(1).mean(0)).sum() for h in hidden)

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        code, hidden = model.encode_hidden(x)
        recon = model.reconstruction_nll(x, code).mean()
        penalty = self.sparsity_penalty([*hidden, code], model.config.sparsity_target)
        total = recon + model.config.sparsity_weight * penalty
        return LossOutput(total, {"reconstruction": recon, "sparsity_kl": penalty})


@dataclass
class ContractiveConfig(AutoencoderConfig):
    activation: str = "sigmoid"
    #: Weight beta of the squared Frobenius norm of the encoder Jacobian.
    contractive_weight: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, non_negative=("contractive_weight",))


class ContractiveVariant(AutoencoderVariant):
    """Contractive autoencoder: L = reconstruction + beta * ||J_g(x)||_F^2 (exact Jacobian)."""

    name = "cae"
    config_class = ContractiveConfig
    description = "Contractive autoencoder: penalise the encoder Jacobian's squared Frobenius norm"

    @staticmethod
    def jacobian_penalty(model: Autoencoder, x: Tensor) -> tuple[Tensor, Tensor]:
        """(code, ||dg(x)/dx||_F^2 per example), exact: one batched backward pass per code unit.

        Examples are independent (no batch-coupling layers), so the gradient of the batch sum of
        code unit k is row k of every example's Jacobian at once.
        """
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            code = model.code(x)
            k = code.shape[1]
            basis = torch.eye(k, device=code.device, dtype=code.dtype)[:, None, :].expand(k, *code.shape)
            (rows,) = torch.autograd.grad(code, x, basis, create_graph=True, is_grads_batched=True)
        return code, rows.pow(2).flatten(2).sum((0, 2))

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        code, frob = self.jacobian_penalty(model, x)
        recon = model.reconstruction_nll(x, code).mean()
        penalty = frob.mean()
        return LossOutput(recon + model.config.contractive_weight * penalty,
                          {"reconstruction": recon, "jacobian_frobenius2": penalty})


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    for variant in (AutoencoderVariant, OvercompleteVariant, DenoisingVariant, SparseVariant, ContractiveVariant):
        register(variant())
