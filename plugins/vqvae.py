"""VQ-VAE (van den Oord et al. 2017): a conv encoder to a grid of code vectors, each replaced by its
nearest codebook vector, and a conv decoder.

- Quantisation: z_q = e_k at every position, k = argmin_j ||z_e - e_j||^2, with the distances computed in
  float32 even under bf16/fp16 autocast (a reduced-precision argmin picks wrong codes).
- Straight-through gradient: the decoder reads z_e + sg[z_q - z_e], which equals z_q forward and passes
  the decoder's gradient to the encoder unchanged backward.
- Loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2 (codebook and commitment terms;
  beta = ``commitment_cost``, 0.25 by default). Every term follows the zoo's convention: summed over one
  example's positions and code dims, averaged over the batch.
- ``codebook_update="ema"`` (appendix A.1 of the paper): the codebook is not trained by its loss term but
  set to exponential moving averages, N_i <- g N_i + (1 - g) n_i and m_i <- g m_i + (1 - g) sum of the
  z_e assigned to code i, e_i = m_i / N~_i with N~ the Laplace-smoothed counts. Under torchrun the counts
  and sums are summed across the processes first, so every process holds the same codebook.
- ``dead_code_threshold > 0``: a code whose moving-average count of assignments per step falls below the
  threshold is restarted at a random encoder output of the current batch (chosen on process 0).

The uniform prior over codes that the paper trains with is not a model of the data: decoding uniformly
drawn codes gives no digit. So this variant is not ``generative``, and ``sample`` raises
``NotImplementedError``: a prior over the code grids (e.g. a PixelCNN over ``encode(x).indices``) must be
fitted first. Its own metrics are the codebook usage and perplexity on the evaluated data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import zoo
from zoo.config import check_fields
from zoo.data import TensorData
from zoo.distributions import QuantizedCode
from zoo.errors import ConfigError
from zoo.losses import reconstruction_nll
from zoo.model import ZooModel
from zoo.nets import SpatialDecoder, SpatialEncoder, spatial_latent_shape
from zoo.stepping import step_context
from zoo.variant import Batch, LossOutput, Variant, make_adam, split_batch

#: Laplace smoothing of the EMA counts (keeps a code that lost every assignment from dividing by zero).
EMA_EPSILON = 1e-5


@dataclass
class VQVAEConfig:
    """Architecture, codebook and loss settings of a VQ-VAE."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    #: Conv widths of the encoder (mirrored by the decoder); each halves H and W.
    hidden_dims: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    #: D, the size of every code vector (the latent's channels).
    embedding_dim: int = 16
    #: K, the number of code vectors in the codebook.
    num_embeddings: int = 64
    #: beta, the weight of the commitment term ||z_e - sg[e]||^2.
    commitment_cost: float = 0.25
    #: "bernoulli" (decoder outputs logits; data in [0, 1]) or "mse" (squared error).
    likelihood: str = "bernoulli"
    #: "loss": the codebook learns from ||sg[z_e] - e||^2; "ema": exponential moving averages (no codebook term).
    codebook_update: str = "loss"
    #: g, the decay of the moving averages (EMA updates and the per-code usage counts).
    ema_decay: float = 0.99
    #: Restart a code whose moving-average assignments per step fall below this (0: never).
    dead_code_threshold: float = 0.0
    #: The codebook's learning rate as a multiple of the training lr (codebook_update="loss").
    codebook_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, positive=("input_shape", "hidden_dims", "embedding_dim", "codebook_lr_scale"),
                     non_negative=("commitment_cost", "dead_code_threshold"))
        if self.likelihood not in ("bernoulli", "mse"):
            raise ConfigError(f"vq-vae reconstructs with 'bernoulli' (BCE) or 'mse', not {self.likelihood!r}")
        if self.codebook_update not in ("loss", "ema"):
            raise ConfigError(f"codebook_update must be 'loss' or 'ema', not {self.codebook_update!r}")
        if self.num_embeddings < 2:
            raise ConfigError(f"num_embeddings must be at least 2 (a codebook of one vector codes nothing), got "
                              f"{self.num_embeddings}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")


class Codebook(nn.Module):
    """K code vectors of size D (``weight``), nearest-vector quantisation, and the moving averages a
    training step updates: ``usage``, the assignments per step of every code (started at 0, so
    ``usage / (1 - g^steps)`` is their unbiased mean), and with ``ema`` the sums ``ema_sum`` of the encoder
    outputs assigned to every code. The EMA counts N start at 1 (and ``ema_sum`` at the initial vectors),
    so N = usage + g^steps and an unused code keeps its vector instead of dividing by a count near 0."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, ema: bool, decay: float,
                 dead_code_threshold: float) -> None:
        super().__init__()
        self.ema, self.decay, self.dead_code_threshold = ema, decay, dead_code_threshold
        weight = torch.empty(num_embeddings, embedding_dim).uniform_(-1 / num_embeddings, 1 / num_embeddings)
        self.weight = nn.Parameter(weight, requires_grad=not ema)
        self.register_buffer("usage", torch.zeros(num_embeddings))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        if ema:
            self.register_buffer("ema_sum", weight.clone())

    def nearest(self, z_e: Tensor) -> Tensor:
        """Indices (B, h, w) of the nearest code vector to every position of z_e (B, D, h, w), from float32
        squared distances ||z||^2 - 2 z.e + ||e||^2 (autocast is off here)."""
        with torch.autocast(z_e.device.type, enabled=False):
            flat = z_e.detach().float().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
            codes = self.weight.detach().float()
            distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)
            indices = distances.argmin(1)
        b, _, h, w = z_e.shape
        return indices.reshape(b, h, w)

    def embed(self, indices: Tensor) -> Tensor:
        """The code vectors at ``indices`` (B, h, w), as a latent (B, D, h, w); differentiable in ``weight``."""
        return F.embedding(indices, self.weight).permute(0, 3, 1, 2)

    @torch.no_grad()
    def update(self, z_e: Tensor, indices: Tensor) -> None:
        """One training step's moving averages (counts and sums summed over the processes first), then
        dead-code restarts."""
        world = step_context().world
        flat = z_e.detach().float().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        one_hot = F.one_hot(indices.reshape(-1), self.weight.shape[0]).float()
        self.steps += 1
        self.usage.mul_(self.decay).add_(world.sum(one_hot.sum(0)), alpha=1 - self.decay)
        if self.ema:
            self.ema_sum.mul_(self.decay).add_(world.sum(one_hot.T @ flat), alpha=1 - self.decay)
            self.weight.copy_(self.ema_sum / self._smoothed_counts()[:, None])
        if self.dead_code_threshold > 0:
            self._restart(flat, world)

    def _debias(self) -> Tensor:
        """1 - g^steps: what the zero-started ``usage`` is short of a mean by."""
        return 1 - self.decay ** self.steps.double()

    def _smoothed_counts(self) -> Tensor:
        """The EMA counts N = usage + g^steps, Laplace-smoothed: (N + eps) / (n + K eps) * n, n = sum N."""
        counts = self.usage + (1 - self._debias()).float()
        total = counts.sum()
        return (counts + EMA_EPSILON) / (total + len(counts) * EMA_EPSILON) * total

    def _restart(self, flat: Tensor, world: Any) -> None:
        """Move every code whose mean assignments per step are below the threshold to a random encoder output
        of this batch (process 0's choice; not when every code is below it). Its mean restarts at the
        threshold: a restarted code that wins no assignments in the next step is moved again."""
        dead = self.usage < self.dead_code_threshold * self._debias().float()
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == len(dead):
            return
        picks = world.broadcast_tensor(flat[torch.randint(len(flat), (n_dead,), device=flat.device)].contiguous())
        self.usage[dead] = self.dead_code_threshold * self._debias().float()
        self.weight[dead] = picks.to(self.weight.dtype)
        if self.ema:
            self.ema_sum[dead] = picks * self._smoothed_counts()[dead, None]

    def forward(self, z_e: Tensor) -> QuantizedCode:
        """Quantise z_e (B, D, h, w). In training the quantised code carries the straight-through gradient
        and the moving averages step once; in eval mode it is exactly the code vectors."""
        indices = self.nearest(z_e)
        if self.training:
            self.update(z_e, indices)
            quantized = z_e + (self.embed(indices) - z_e).detach()
        else:
            quantized = self.embed(indices).to(z_e.dtype)
        return QuantizedCode(quantized, indices, self.weight, z_e)


class VQVAEModel(ZooModel):
    """Encoder -> code grid z_e (D x h x w) -> nearest code vectors -> decoder. ``encode`` returns a
    :class:`~zoo.distributions.QuantizedCode`."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        self.encoder = SpatialEncoder(config.input_shape, config.hidden_dims, config.embedding_dim, config.activation)
        self.codebook = Codebook(config.num_embeddings, config.embedding_dim, ema=config.codebook_update == "ema",
                                 decay=config.ema_decay, dead_code_threshold=config.dead_code_threshold)
        self.decoder = SpatialDecoder(config.embedding_dim, config.hidden_dims, config.input_shape, config.activation)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        cfg = self.config
        return spatial_latent_shape(cfg.input_shape, cfg.hidden_dims, cfg.embedding_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> QuantizedCode:
        return self.codebook(self.encoder(x))

    def decode_logits(self, z: Tensor) -> Tensor:
        """Decoder output (logits or values) for codes (B, D, h, w) or (K, B, D, h, w)."""
        lead = z.shape[:z.dim() - 3]
        return self.decoder(z.reshape(-1, *z.shape[-3:])).reshape(*lead, *self.config.input_shape)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images from code indices (B, h, w): what a prior over code grids samples."""
        return self.decode(self.codebook.embed(indices))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x).quantized)

    def reconstruction_nll(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x|z) per example: BCE on the logits (bernoulli), or the squared error (mse)."""
        return reconstruction_nll(self.decode_logits(z), x, self.config.likelihood)

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            "vq-vae has no learned prior over its code grids: decoding uniformly drawn codes gives noise, not "
            "data. Fit a prior over the code indices (e.g. an autoregressive model of model.encode(x).indices) "
            "and decode its samples with model.decode_indices(indices).")


class VQVAEVariant(Variant):
    """VQ-VAE: L = -log p(x|z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (no codebook term with EMA)."""

    name = "vq-vae"
    config_class = VQVAEConfig
    description = "VQ-VAE (van den Oord et al.): a spatial grid of codebook vectors, straight-through gradient"
    has_likelihood = True
    metric_names = {
        "codebook_usage": "fraction of the codebook's vectors used at least once on the data",
        "codebook_perplexity": "perplexity exp(H) of the code distribution over every position of the data "
                               "(K for uniform use, 1 for a single code)",
    }

    def tiny_config(self) -> VQVAEConfig:
        return VQVAEConfig(input_shape=(1, 8, 8), hidden_dims=(8, 16), embedding_dim=4, num_embeddings=8)

    def build(self, config: VQVAEConfig) -> VQVAEModel:
        return VQVAEModel(config)

    def loss(self, model: VQVAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        code = model.encode(x)
        recon = model.reconstruction_nll(x, code.quantized).mean()
        chosen = model.codebook.embed(code.indices).float()
        encoded = code.encoded.float()
        commitment = (encoded - chosen.detach()).pow(2).flatten(1).sum(1).mean()
        terms = {"reconstruction": recon, "commitment": commitment}
        total = recon + model.config.commitment_cost * commitment
        if model.config.codebook_update == "loss":
            terms["codebook"] = (encoded.detach() - chosen).pow(2).flatten(1).sum(1).mean()
            total = total + terms["codebook"]
        terms["perplexity"] = perplexity(code.indices, model.config.num_embeddings).detach()
        return LossOutput(total, terms)

    def configure_optimizers(self, model: VQVAEModel, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        """One Adam, the codebook in a parameter group of its own at ``codebook_lr_scale`` times the lr."""
        networks = [p for name, p in model.named_parameters() if not name.startswith("codebook.")]
        groups = [{"params": networks},
                  {"params": list(model.codebook.parameters()),
                   "lr": train_config.lr * model.config.codebook_lr_scale}]
        return {"model": make_adam(groups, train_config)}

    def metrics(self, model: VQVAEModel, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        device = next(model.parameters()).device
        counts = torch.zeros(model.config.num_embeddings, dtype=torch.float64, device=device)
        for (x, *_) in data.batches(500, shuffle=False):
            indices = model.encode(x.to(device)).indices
            counts += torch.bincount(indices.reshape(-1), minlength=len(counts)).double()
        return {"codebook_usage": float((counts > 0).double().mean()),
                "codebook_perplexity": float(perplexity_of_counts(counts))}


def perplexity(indices: Tensor, num_embeddings: int) -> Tensor:
    """exp of the entropy (nats) of the code distribution over every position of ``indices`` (on their
    device, no host sync)."""
    flat = indices.reshape(-1)
    # index_add_, not bincount: bincount sizes its output from indices.max(), a host sync per step on a GPU
    ones = torch.ones(len(flat), device=flat.device)
    counts = torch.zeros(num_embeddings, device=flat.device).index_add_(0, flat, ones)
    return perplexity_of_counts(counts)


def perplexity_of_counts(counts: Tensor) -> Tensor:
    """exp(-sum p log p) for p = counts / counts.sum(); unused codes add nothing."""
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(VQVAEVariant())
