"""The built-in ex-post samplers (zoo.samplers): a Gaussian, a Gaussian mixture, a masked autoregressive flow,
the two-stage VAE and a PixelCNN over discrete code grids, each fitted to a trained model's codes.

- ``gaussian``: one full-covariance Gaussian (the codes' mean and covariance).
- ``gmm``: a full-covariance Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture``), as Ghosh et
  al. (2020) give their regularised autoencoders a prior; its parameters are kept as tensors, and it draws
  and scores with ``torch.distributions``.
- ``flow``: a masked autoregressive flow (Papamakarios et al. 2017) of Pyro's ``AffineAutoregressive``
  transforms fitted by maximum likelihood: the density of a code is one pass through the transforms,
  a draw inverts them (one pass per dimension).
- ``two-stage``: Dai & Wipf (2019): a second VAE fitted to the codes, u -> z, with a Gaussian decoder whose
  variance gamma is learned; a draw decodes u ~ N(0, I) to the mean of p(z|u). Its density has no closed
  form (only a bound), so it scores nothing.
- ``pixelcnn``: for the (h, w) grid of discrete codes of a VQ model: each code vector is a symbol of a vocabulary
  read from the training codes, and a PixelCNN (van den Oord et al. 2016: a 7x7 type-A masked convolution,
  then 3x3 type-B ones; not the gated variant, so with its blind spot) models the grid autoregressively in
  raster order, as van den Oord et al. (2017) give the VQ-VAE a prior. A draw takes h x w passes.

The flow and the second VAE see the codes standardised per dimension (their mean and standard deviation are
kept with them): the codes of an autoencoder can have any scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

import zoo
from zoo.config import check_fields
from zoo.errors import ConfigError
from zoo.nets import mlp
from zoo.samplers import FittedSampler, Sampler


def standard_normal(n: int, dim: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(n, dim) standard normal draws from ``generator`` (on its device), moved to ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(n, dim, generator=generator, device=device).to(like)


def fit_by_minibatches(loss: Callable[[Tensor], Tensor], parameters: list[nn.Parameter], codes: Tensor, *,
                       epochs: int, batch_size: int, lr: float, generator: torch.Generator) -> None:
    """Adam on the mean of ``loss(batch)`` over shuffled minibatches of ``codes`` for ``epochs`` passes."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(codes), generator=generator, device=generator.device).to(codes.device)
        for start in range(0, len(codes), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss(codes[order[start:start + batch_size]]).mean().backward()
            optimizer.step()


class Standardised(FittedSampler):
    """A sampler that works on codes standardised per dimension (their mean and standard deviation kept)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("code_mean", torch.zeros(dim))
        self.register_buffer("code_std", torch.ones(dim))

    def set_scale(self, codes: Tensor) -> Tensor:
        """Keep the codes' mean and standard deviation; return the codes standardised."""
        self.code_mean.copy_(codes.mean(0))
        self.code_std.copy_(codes.std(0).clamp_min(1e-6))
        return self.standardise(codes)

    def standardise(self, codes: Tensor) -> Tensor:
        return (codes - self.code_mean) / self.code_std

    def unstandardise(self, units: Tensor) -> Tensor:
        return units * self.code_std + self.code_mean

    def unit_loss(self, units: Tensor) -> Tensor:
        """The per-code loss its fit minimises, on standardised codes (N,)."""
        raise NotImplementedError

    def fit_units(self, codes: Tensor, config: Any, generator: torch.Generator) -> None:
        """Keep the codes' scale, then fit every parameter to the standardised codes by minibatch Adam on
        :meth:`unit_loss` (``config``: ``epochs``, ``batch_size``, ``lr``)."""
        fit_by_minibatches(self.unit_loss, list(self.parameters()), self.set_scale(codes), epochs=config.epochs,
                           batch_size=config.batch_size, lr=config.lr, generator=generator)


# -- Gaussian --------------------------------------------------------------------------------------------------


@dataclass
class GaussianConfig:
    #: Added to the covariance's diagonal, so that a code dimension that never varies stays invertible.
    jitter: float = 1e-6

    def __post_init__(self) -> None:
        check_fields(self, non_negative=("jitter",))


class GaussianCodes(FittedSampler):
    """N(mean, L L^T) over the codes."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale_tril", torch.eye(dim))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mean + standard_normal(n, len(self.mean), self.mean, generator) @ self.scale_tril.T

    def log_prob(self, codes: Tensor) -> Tensor:
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril).log_prob(codes)


def cholesky_of(covariance: Tensor, jitter: float) -> Tensor:
    """The lower Cholesky factor of ``covariance`` + jitter I (float64 for the factorisation)."""
    eye = torch.eye(covariance.shape[-1], dtype=torch.float64, device=covariance.device)
    return torch.linalg.cholesky(covariance.double() + jitter * eye)


class GaussianSampler(Sampler):
    name = "gaussian"
    description = "One full-covariance Gaussian fitted to the codes (their mean and covariance)"
    config_class = GaussianConfig

    def build(self, config: GaussianConfig, latent_shape: tuple[int, ...]) -> GaussianCodes:
        return GaussianCodes(math.prod(latent_shape))

    def fit(self, sampler: GaussianCodes, codes: Tensor, config: GaussianConfig, generator: torch.Generator) -> None:
        sampler.mean.copy_(codes.double().mean(0))
        sampler.scale_tril.copy_(cholesky_of(torch.cov(codes.double().T).reshape(codes.shape[1], -1), config.jitter))


# -- Gaussian mixture ------------------------------------------------------------------------------------------


@dataclass
class GMMConfig:
    #: Mixture components (Ghosh et al. use 10 on MNIST).
    num_components: int = 10
    #: scikit-learn's reg_covar: added to each covariance's diagonal.
    reg_covar: float = 1e-6
    max_iter: int = 500

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_components", "max_iter"), non_negative=("reg_covar",))


class MixtureCodes(FittedSampler):
    """sum_k w_k N(mean_k, L_k L_k^T) over the codes."""

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_trils", torch.eye(dim).repeat(components, 1, 1))

    def mixture(self) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(probs=self.weights), MultivariateNormal(self.means,
                                                                                    scale_tril=self.scale_trils))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else self.weights.device
        component = torch.multinomial(self.weights.to(device), n, replacement=True,
                                      generator=generator).to(self.weights.device)
        eps = standard_normal(n, self.means.shape[1], self.means, generator)
        return self.means[component] + (self.scale_trils[component] @ eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, codes: Tensor) -> Tensor:
        return self.mixture().log_prob(codes)


class GMMSampler(Sampler):
    name = "gmm"
    description = "A full-covariance Gaussian mixture fitted by EM (scikit-learn), as Ghosh et al. (2020)"
    config_class = GMMConfig

    def build(self, config: GMMConfig, latent_shape: tuple[int, ...]) -> MixtureCodes:
        return MixtureCodes(math.prod(latent_shape), config.num_components)

    def fit(self, sampler: MixtureCodes, codes: Tensor, config: GMMConfig, generator: torch.Generator) -> None:
        from sklearn.mixture import GaussianMixture

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        gmm = GaussianMixture(config.num_components, covariance_type="full", reg_covar=config.reg_covar,
                              max_iter=config.max_iter, random_state=seed)
        gmm.fit(codes.double().cpu().numpy())
        sampler.weights.copy_(torch.from_numpy(gmm.weights_))
        sampler.means.copy_(torch.from_numpy(gmm.means_))
        sampler.scale_trils.copy_(torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)))


# -- masked autoregressive flow --------------------------------------------------------------------------------


@dataclass
class FlowConfig:
    #: AffineAutoregressive transforms (each with its own random order of the dimensions).
    num_flows: int = 5
    #: Hidden layers of each transform's MADE (small: a fitted sampler is saved with the model).
    hidden_dims: tuple[int, ...] = (64, 64)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_flows", "hidden_dims", "epochs", "batch_size", "lr"))


class FlowCodes(Standardised):
    """A masked autoregressive flow: u = T_K(...T_1(x)) with x the standardised code, log p(x) = log N(u; 0, I) +
    sum_k log|det dT_k|; a draw inverts the transforms from u ~ N(0, I)."""

    def __init__(self, dim: int, config: FlowConfig) -> None:
        import pyro.distributions.transforms as T

        super().__init__(dim)
        self.transforms = nn.ModuleList([T.affine_autoregressive(dim, hidden_dims=list(config.hidden_dims))
                                         for _ in range(config.num_flows)])

    def unit_log_prob(self, x: Tensor) -> Tensor:
        """log density of standardised codes ``x`` (N, D)."""
        log_det = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for transform in self.transforms:
            y = transform(x)
            log_det = log_det + transform.log_abs_det_jacobian(x, y)
            x = y
        return Normal(0.0, 1.0).log_prob(x).sum(-1) + log_det

    def log_prob(self, codes: Tensor) -> Tensor:
        return self.unit_log_prob(self.standardise(codes)) - self.code_std.log().sum()

    def unit_loss(self, units: Tensor) -> Tensor:
        return -self.unit_log_prob(units)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        x = standard_normal(n, len(self.code_mean), self.code_mean, generator)
        for transform in reversed(self.transforms):
            x = transform.inv(x)
        return self.unstandardise(x)


class FlowSampler(Sampler):
    name = "flow"
    description = "A masked autoregressive flow (Pyro's AffineAutoregressive) fitted to the codes by maximum " \
                  "likelihood"
    config_class = FlowConfig

    def build(self, config: FlowConfig, latent_shape: tuple[int, ...]) -> FlowCodes:
        return FlowCodes(math.prod(latent_shape), config)

    def fit(self, sampler: FlowCodes, codes: Tensor, config: FlowConfig, generator: torch.Generator) -> None:
        sampler.fit_units(codes, config, generator)


# -- two-stage VAE ---------------------------------------------------------------------------------------------


@dataclass
class TwoStageConfig:
    #: Hidden layers of the second VAE's encoder and decoder (Dai & Wipf: 3 layers of 1024; smaller here, as the
    #: codes of a 3,500-image training set are few and a fitted sampler is saved with the model).
    hidden_dims: tuple[int, ...] = (256, 256)
    #: Size of u; 0: the size of the code, as Dai & Wipf.
    latent_dim: int = 0
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_fields(self, positive=("hidden_dims", "epochs", "batch_size", "lr"), non_negative=("latent_dim",))


class TwoStageCodes(Standardised):
    """The second-stage VAE over standardised codes x: q(u|x) = N(mu(x), diag sigma^2(x)) and
    p(x|u) = N(f(u), gamma I)."""

    def __init__(self, dim: int, config: TwoStageConfig) -> None:
        super().__init__(dim)
        self.latent_dim = config.latent_dim or dim
        hidden = list(config.hidden_dims)
        self.encoder = mlp([dim, *hidden, 2 * self.latent_dim])
        self.decoder = mlp([self.latent_dim, *hidden, dim])
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def unit_loss(self, x: Tensor) -> Tensor:
        return self.negative_elbo(x)

    def negative_elbo(self, x: Tensor) -> Tensor:
        """-ELBO of standardised codes ``x`` (N, D) with one reparameterised draw of u, per code."""
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        u = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        gamma = self.log_gamma.exp()
        reconstruction = ((x - self.decoder(u)).pow(2) / (2 * gamma)).sum(-1) + 0.5 * x.shape[-1] * (
            math.log(2 * math.pi) + self.log_gamma)
        kl = 0.5 * (logvar.exp() + mean.pow(2) - 1 - logvar).sum(-1)
        return reconstruction + kl

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = standard_normal(n, self.latent_dim, self.code_mean, generator)
        return self.unstandardise(self.decoder(u))


class TwoStageSampler(Sampler):
    name = "two-stage"
    description = "The two-stage VAE (Dai & Wipf 2019): a second VAE with a learned decoder variance, fitted to " \
                  "the codes"
    config_class = TwoStageConfig

    def build(self, config: TwoStageConfig, latent_shape: tuple[int, ...]) -> TwoStageCodes:
        return TwoStageCodes(math.prod(latent_shape), config)

    def fit(self, sampler: TwoStageCodes, codes: Tensor, config: TwoStageConfig, generator: torch.Generator) -> None:
        sampler.fit_units(codes, config, generator)


# -- PixelCNN over a grid of discrete codes -------------------------------------------------------------------


@dataclass
class PixelCNNConfig:
    #: The most distinct code vectors (a VQ model's codebook entries in use) it models.
    max_vocabulary: int = 256
    channels: int = 64
    #: Masked 3x3 convolutions after the first 7x7 one.
    layers: int = 5
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_fields(self, positive=("max_vocabulary", "channels", "layers", "epochs", "batch_size", "lr"))


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the positions before its own in raster order (type "A"), or those and its
    own (type "B"): PixelCNN's masks (van den Oord et al. 2016) for one stream of discrete symbols."""

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight)
        centre = kernel_size // 2
        mask[:, :, centre, centre + (mask_type == "B"):] = 0
        mask[:, :, centre + 1:] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelCNNCodes(FittedSampler):
    """p(k) = prod_(i, j) p(k_ij | the symbols before (i, j) in raster order) over a model's (h, w) grid of
    discrete codes, each code vector one symbol of a vocabulary read from the training codes."""

    def __init__(self, latent_shape: tuple[int, ...], config: PixelCNNConfig) -> None:
        super().__init__()
        if len(latent_shape) != 3:
            raise ConfigError(f"pixelcnn models a grid of discrete codes (C, h, w); this model's codes are "
                              f"{tuple(latent_shape)}: use gaussian, gmm, flow or two-stage for a flat latent")
        self.latent_shape = tuple(latent_shape)
        vocabulary, width = config.max_vocabulary, config.channels
        self.register_buffer("vocabulary", torch.zeros(vocabulary, latent_shape[0]))
        self.register_buffer("vocabulary_size", torch.zeros((), dtype=torch.long))
        self.embedding = nn.Embedding(vocabulary, width)
        layers: list[nn.Module] = [MaskedConv2d("A", width, width, 7)]
        for _ in range(config.layers):
            layers += [nn.ReLU(), MaskedConv2d("B", width, width, 3)]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(width, vocabulary, 1))

    def symbols(self, codes: Tensor) -> Tensor:
        """Flat codes (N, D) -> the (N, h, w) grid of vocabulary indices (each code vector's nearest entry)."""
        c, h, w = self.latent_shape
        vectors = codes.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, c)
        used = self.vocabulary[:int(self.vocabulary_size)]
        return torch.cdist(vectors.float(), used.float()).argmin(1).reshape(-1, h, w)

    def logits(self, symbols: Tensor) -> Tensor:
        """(N, h, w) symbols -> (N, V, h, w) logits; entries beyond the vocabulary in use get -inf."""
        out = self.net(self.embedding(symbols).permute(0, 3, 1, 2))
        unused = torch.arange(out.shape[1], device=out.device) >= self.vocabulary_size
        return out.masked_fill(unused[None, :, None, None], float("-inf"))

    def symbol_nll(self, symbols: Tensor) -> Tensor:
        """-log p of each grid (N,): the cross-entropy summed over its positions."""
        return F.cross_entropy(self.logits(symbols), symbols, reduction="none").flatten(1).sum(1)

    def log_prob(self, codes: Tensor) -> Tensor:
        return -self.symbol_nll(self.symbols(codes))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        c, h, w = self.latent_shape
        symbols = torch.zeros(n, h, w, dtype=torch.long, device=self.vocabulary.device)
        for i in range(h):
            for j in range(w):
                # The rows below i cannot reach position (i, j) through the masked convolutions: leaving them
                # out gives the same logits (bit for bit, checked in tests/test_samplers.py) for (h + 1) / (2h) of
                # the work (4/7 on a 7x7 grid).
                probs = self.logits(symbols[:, :i + 1])[:, :, i, j].softmax(-1)
                device = generator.device if generator is not None else probs.device
                symbols[:, i, j] = torch.multinomial(probs.to(device), 1, generator=generator).squeeze(1).to(
                    symbols.device)
        return self.vocabulary[symbols].permute(0, 3, 1, 2).reshape(n, -1)


class PixelCNNSampler(Sampler):
    name = "pixelcnn"
    description = "A PixelCNN (masked convolutions) over the grid of discrete codes of a VQ model (maximum likelihood)"
    config_class = PixelCNNConfig

    def build(self, config: PixelCNNConfig, latent_shape: tuple[int, ...]) -> PixelCNNCodes:
        return PixelCNNCodes(latent_shape, config)

    def fit(self, sampler: PixelCNNCodes, codes: Tensor, config: PixelCNNConfig, generator: torch.Generator) -> None:
        c, h, w = sampler.latent_shape
        vocabulary = codes.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, c).unique(dim=0)
        if len(vocabulary) > config.max_vocabulary:
            raise ConfigError(f"the codes hold {len(vocabulary)} distinct vectors, more than max_vocabulary="
                              f"{config.max_vocabulary}: pixelcnn models the discrete codes of a VQ model; raise "
                              f"max_vocabulary if these are those")
        sampler.vocabulary[:len(vocabulary)] = vocabulary
        sampler.vocabulary_size.fill_(len(vocabulary))
        fit_by_minibatches(sampler.symbol_nll, list(sampler.parameters()), sampler.symbols(codes),
                           epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, generator=generator)


@zoo.hookimpl
def zoo_register_samplers(register: Any) -> None:
    for sampler in (GaussianSampler(), GMMSampler(), FlowSampler(), TwoStageSampler(), PixelCNNSampler()):
        register(sampler)
