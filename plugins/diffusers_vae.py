"""The autoencoders of latent diffusion, wrapped from diffusers: ``autoencoder-kl`` (Stable Diffusion 1.x/2.x,
SDXL, SD3 and FLUX VAEs), ``autoencoder-tiny`` (TAESD) and ``vq-model`` (VQ-GAN style).

diffusers builds the architecture (``AutoencoderKL``, ``AutoencoderTiny``, ``VQModel``); the zoo adds the
model contract, training, evaluation, cards and both folder layouts. Each zoo model registers the diffusers
model's own submodules (``encoder``, ``decoder``, ``quant_conv``, ...) under their own names, so its state dict
*is* the diffusers state dict: a diffusers folder loads into it, and ``save_pretrained(DIR, format="diffusers")``
writes one that ``diffusers.AutoencoderKL.from_pretrained(DIR)`` loads with bit-identical weights.

- **Images** are in ``image_range`` (-1, 1) by default, as diffusers and its pipelines use them; set
  ``image_range=(0, 1)`` to hand the model [0, 1] images. The zoo's tools convert their [0, 1] data.
- **Latents**: ``encode`` gives the autoencoder's latent (a :class:`~zoo.DiagonalGaussian` for KL
  autoencoders, a point mass for TAESD, a quantised code for VQ models). A diffusion model works on a
  scaled latent: :meth:`to_diffusion_latent` / :meth:`from_diffusion_latent` map between them with the
  family's ``scaling_factor``, ``shift_factor`` and per-channel ``latents_mean`` / ``latents_std``, the
  formulas diffusers' pipelines use. TAESD's ``latent_magnitude``/``latent_shift`` map its latent to [0, 1]
  for storing as an image (:meth:`latent_to_image` / :meth:`latent_from_image`).
- **Training and fine-tuning** (Esser et al. 2021, Rombach et al. 2022): -log p(x|z) with a Laplace (``l1``)
  or Gaussian (``l2``) likelihood of unit scale, + ``kl_weight`` (1e-6) x KL for KL autoencoders, + the
  codebook and commitment terms for VQ models, + ``perceptual_weight`` x a distance in a feature network's
  space (``perceptual_network="timm:NAME"`` or :meth:`set_perceptual_network` with any module), + with
  ``disc_weight > 0`` a PatchGAN discriminator (hinge loss) from step ``disc_start`` on, its generator term
  weighted adaptively by ||grad L_rec|| / ||grad L_GAN|| at the decoder's last layer. Terms are summed over
  one example and averaged over the batch, as in the latent-diffusion code and everywhere in the zoo.
- ``gradient_checkpointing``, ``tiling`` and ``slicing`` switch on diffusers' own.

The variants are listed without diffusers installed (marked as needing the extra); building one says what to
install. Nothing here imports diffusers until a model is built, so ``import zoo`` and discovery stay fast.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import zoo
from zoo.config import check_fields, config_from_dict
from zoo.contract import model_input, posterior_of
from zoo.distributions import DiagonalGaussian, PointMass, Posterior, QuantizedCode
from zoo.errors import ConfigError, MissingDependencyError
from zoo.model import ZooModel
from zoo.stepping import step_context
from zoo.variant import Batch, LossOutput, Variant, make_adam, split_batch

logger = logging.getLogger(__name__)

EXTRA = "pip install 'ae-zoo[diffusers]'"
LIKELIHOODS = ("l1", "l2")


def diffusers_available() -> bool:
    """Whether diffusers can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("diffusers") is not None
    except (ImportError, ValueError):
        return False


def diffusers_class(name: str) -> type[nn.Module]:
    """``diffusers.<name>``, or a :class:`MissingDependencyError` saying what to install."""
    try:
        import diffusers
    except ImportError as err:
        raise MissingDependencyError(f"this variant wraps diffusers' {name}, and diffusers is not installed: "
                                     f"{EXTRA}") from err
    return getattr(diffusers, name)


# -- configs ----------------------------------------------------------------------------------------------


@dataclass
class TrainingSettings:
    """What the zoo adds to a diffusers autoencoder: the image range, the loss and the runtime switches."""

    #: (low, high) of the images the model takes and returns; diffusers' models and pipelines use (-1, 1).
    image_range: tuple[float, float] = (-1.0, 1.0)
    #: "l1": Laplace likelihood of unit scale (the latent-diffusion autoencoders' L1 loss); "l2": Gaussian.
    likelihood: str = "l1"
    #: Weight of the perceptual term (0: off); the network is perceptual_network or set_perceptual_network().
    perceptual_weight: float = 0.0
    #: "timm:NAME": a timm model's feature maps (pretrained weights from the local cache with perceptual_pretrained).
    perceptual_network: str | None = None
    perceptual_pretrained: bool = False
    #: Weight of the adversarial term (0: no discriminator).
    disc_weight: float = 0.0
    #: The step from which the discriminator and the adversarial term are on.
    disc_start: int = 0
    #: Strided conv layers of the PatchGAN discriminator, and the width of its first.
    disc_layers: int = 3
    disc_channels: int = 64
    #: diffusers' memory savers: activation checkpointing in training, tiled and sliced encode/decode.
    gradient_checkpointing: bool = False
    tiling: bool = False
    slicing: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the tools feed: ``in_channels`` at ``sample_size`` (the networks themselves
        are fully convolutional and take any size their downsampling divides)."""
        size = self.sample_size  # type: ignore[attr-defined]
        height, width = (size, size) if isinstance(size, int) else size
        return self.in_channels, height, width  # type: ignore[attr-defined]

    def check_training(self) -> None:
        low, high = self.image_range
        if not low < high:
            raise ConfigError(f"image_range must be (low, high) with low < high, got {self.image_range}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be 'l1' (Laplace) or 'l2' (Gaussian), not {self.likelihood!r}")
        if self.perceptual_network is not None and not self.perceptual_network.startswith("timm:"):
            raise ConfigError(f"perceptual_network must be 'timm:NAME' (e.g. 'timm:vgg16'), not "
                              f"{self.perceptual_network!r}; pass any other module with "
                              f"model.set_perceptual_network(module)")


@dataclass
class EncoderDecoderBlocks(TrainingSettings):
    """The arguments ``AutoencoderKL`` and ``VQModel`` share: diffusers' ``Encoder``/``Decoder`` blocks."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"


@dataclass
class AutoencoderKLConfig(EncoderDecoderBlocks):
    """diffusers' ``AutoencoderKL`` arguments (the same names and defaults) plus the zoo's settings."""

    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, int] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    #: Weight of KL(q(z|x) || N(0, I)) in the training loss (1e-6 in latent diffusion).
    kl_weight: float = 1e-6

    def __post_init__(self) -> None:
        check_fields(self, positive=("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                                     "latent_channels", "norm_num_groups", "sample_size", "disc_layers",
                                     "disc_channels"),
                     non_negative=("kl_weight", "perceptual_weight", "disc_weight", "disc_start"))
        self.check_training()


@dataclass
class AutoencoderTinyConfig(TrainingSettings):
    """diffusers' ``AutoencoderTiny`` (TAESD) arguments plus the zoo's settings; ``sample_size`` is the image
    size tools and tests use (TAESD itself takes any size divisible by 8)."""

    in_channels: int = 3
    out_channels: int = 3
    encoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)
    decoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)
    act_fn: str = "relu"
    upsample_fn: str = "nearest"
    latent_channels: int = 4
    upsampling_scaling_factor: int = 2
    num_encoder_blocks: tuple[int, ...] = (1, 3, 3, 3)
    num_decoder_blocks: tuple[int, ...] = (3, 3, 3, 1)
    latent_magnitude: float = 3.0
    latent_shift: float = 0.5
    force_upcast: bool = False
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    sample_size: int = 64

    def __post_init__(self) -> None:
        check_fields(self, positive=("in_channels", "out_channels", "encoder_block_out_channels",
                                     "decoder_block_out_channels", "latent_channels", "num_encoder_blocks",
                                     "num_decoder_blocks", "sample_size", "disc_layers", "disc_channels"),
                     non_negative=("perceptual_weight", "disc_weight", "disc_start"))
        self.check_training()


@dataclass
class VQModelConfig(EncoderDecoderBlocks):
    """diffusers' ``VQModel`` arguments plus the zoo's settings."""

    latent_channels: int = 3
    sample_size: int = 32
    num_vq_embeddings: int = 256
    norm_num_groups: int = 32
    vq_embed_dim: int | None = None
    scaling_factor: float = 0.18215
    norm_type: str = "group"
    mid_block_add_attention: bool = True
    lookup_from_codebook: bool = False
    force_upcast: bool = False
    #: beta, the weight of the commitment term ||z_e - sg[e]||^2 (the codebook term has weight 1).
    commitment_cost: float = 0.25

    def __post_init__(self) -> None:
        check_fields(self, positive=("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                                     "latent_channels", "sample_size", "num_vq_embeddings", "norm_num_groups",
                                     "vq_embed_dim", "disc_layers", "disc_channels"),
                     non_negative=("commitment_cost", "perceptual_weight", "disc_weight", "disc_start"))
        self.check_training()


def diffusers_kwargs(config: TrainingSettings) -> dict[str, Any]:
    """The fields of ``config`` that are arguments of the diffusers class (everything but the zoo's settings)."""
    own = {f.name for f in fields(TrainingSettings)} | {"kl_weight", "commitment_cost"}
    if isinstance(config, AutoencoderTinyConfig):
        own.add("sample_size")
    return {f.name: _plain(getattr(config, f.name)) for f in fields(config) if f.name not in own}


def _plain(value: Any) -> Any:
    """Tuples as lists, as diffusers writes them to config.json."""
    return list(value) if isinstance(value, tuple) else value


# -- the model ------------------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix and taming-transformers (``NLayerDiscriminator``): strided 4x4
    convolutions with batch norm and leaky ReLUs, one logit per patch."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for i in range(1, layers + 1):
            wider = channels * min(2 ** i, 8)
            blocks += [nn.Conv2d(width, wider, 4, 2 if i < layers else 1, 1, bias=False), nn.BatchNorm2d(wider),
                       nn.LeakyReLU(0.2, True)]
            width = wider
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        smallest = 3 * 2 ** self.layers  # the strided convolutions must leave 3 x 3 for the two 4 x 4 ones
        if min(x.shape[-2:]) < smallest:
            raise ConfigError(f"the discriminator with disc_layers={self.layers} needs images of at least "
                              f"{smallest} x {smallest} pixels, got {x.shape[-2]} x {x.shape[-1]}: use larger "
                              f"images (crops) or fewer disc_layers")
        return self.net(x)


class FeatureDistance(nn.Module):
    """A perceptual distance from a feature network: the squared differences of its feature maps (each
    normalised over channels, as LPIPS does), averaged over positions and summed over maps, per example."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        both = self.features(torch.cat([x, y]))
        maps = both if isinstance(both, list | tuple) else [both]
        total = x.new_zeros(len(x), dtype=torch.float32)
        for fmap in maps:
            fmap = F.normalize(fmap.float(), dim=1) if fmap.dim() == 4 else fmap.float()
            a, b = fmap.chunk(2)
            total = total + (a - b).pow(2).flatten(1).mean(1) * (a.shape[1] if fmap.dim() == 4 else 1)
        return total


class DiffusersAutoencoder(ZooModel):
    """A diffusers autoencoder with the zoo's contract. ``self.net`` is the diffusers model; its submodules
    are this module's, under the same names, so the two share one state dict."""

    export_formats: ClassVar[tuple[str, ...]] = ("diffusers",)
    class_name: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        net = diffusers_class(self.class_name)(**diffusers_kwargs(config))
        object.__setattr__(self, "net", net)  # not a submodule: its children are registered below
        for name, child in net.named_children():
            self.add_module(name, child)
        if config.gradient_checkpointing:
            net.enable_gradient_checkpointing()
        if config.tiling:
            net.enable_tiling()
        if config.slicing:
            net.enable_slicing()
        if config.disc_weight > 0:
            self.discriminator = PatchDiscriminator(config.out_channels, config.disc_channels, config.disc_layers)
        object.__setattr__(self, "perceptual", None)
        if config.perceptual_network is not None:
            self.set_perceptual_network(_timm_features(config.perceptual_network, config.perceptual_pretrained))

    def train(self, mode: bool = True) -> DiffusersAutoencoder:
        super().train(mode)
        self.net.train(mode)  # diffusers reads its own flag (gradient checkpointing)
        return self

    @property
    def image_range(self) -> tuple[float, float]:
        low, high = self.config.image_range
        return float(low), float(high)

    def set_perceptual_network(self, network: nn.Module | Callable[[Tensor, Tensor], Tensor] | None) -> None:
        """The perceptual term's network, not saved with the model: a module mapping images (in [-1, 1]) to a
        feature map or a list of them (any timm or torch model; wrapped in :class:`FeatureDistance`), or a
        distance ``f(x, x_hat) -> (B,)``/(B, 1, 1, 1) such as ``lpips.LPIPS(net="vgg")``. None removes it."""
        if network is not None and _is_distance(network):
            object.__setattr__(self, "perceptual", network)
        else:
            object.__setattr__(self, "perceptual", None if network is None else FeatureDistance(network))

    # -- images <-> the network's [-1, 1] ------------------------------------------------------------
    def to_net(self, x: Tensor) -> Tensor:
        low, high = self.image_range
        return x if (low, high) == (-1.0, 1.0) else (x - low) * (2.0 / (high - low)) - 1.0

    def from_net(self, images: Tensor) -> Tensor:
        low, high = self.image_range
        return images if (low, high) == (-1.0, 1.0) else (images + 1.0) * ((high - low) / 2.0) + low

    # -- the contract --------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        _, height, width = self.config.input_shape
        factor = self.downsampling
        return self.latent_channels, math.ceil(height / factor), math.ceil(width / factor)

    @property
    def downsampling(self) -> int:
        """How many image pixels one latent position covers along each side."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.from_net(self.net.decode(z).sample)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        posterior = self.encode(x)
        return self.decode(posterior.sample() if self.training else posterior.mode())

    def reconstruction_nll(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x|z) per example of images ``x`` in ``image_range``: Laplace (``l1``) or Gaussian (``l2``) of
        unit scale around the decoded image, constants included. ``z`` may carry leading sample dims."""
        lead = z.shape[:z.dim() - 3]
        decoded = self.decode(z.reshape(-1, *z.shape[-3:])).reshape(*lead, *x.shape[1:])
        return likelihood_nll(decoded, x, self.config.likelihood)

    # -- latents for a diffusion model ---------------------------------------------------------------
    def to_diffusion_latent(self, z: Tensor) -> Tensor:
        """The autoencoder's latent as a diffusion model sees it: ``(z - mean) * scaling_factor / std`` per
        channel with ``latents_mean``/``latents_std``, else ``(z - shift_factor) * scaling_factor``."""
        mean, std = self._latent_statistics(z)
        return (z - mean) * self.config.scaling_factor / std

    def from_diffusion_latent(self, latent: Tensor) -> Tensor:
        """The inverse of :meth:`to_diffusion_latent`: what a diffusion model's latent decodes from."""
        mean, std = self._latent_statistics(latent)
        return latent * std / self.config.scaling_factor + mean

    @torch.no_grad()
    def fit_scaling_factor(self, images: Tensor) -> float:
        """Set ``scaling_factor`` to 1 / the standard deviation of the latents of ``images`` (zoo [0, 1] images,
        e.g. a training batch) around ``shift_factor``, as Rombach et al. (2022, sec. 4.3.2) chose it, so the
        diffusion model sees unit-variance latents; returns it."""
        was_training = self.training
        self.eval()
        latent = posterior_of(self, images.to(next(self.parameters()).device)).mode().double()
        self.train(was_training)
        shift = getattr(self.config, "shift_factor", None) or 0.0
        self.config.scaling_factor = float(1.0 / (latent - shift).pow(2).mean().sqrt())
        return self.config.scaling_factor

    def _latent_statistics(self, like: Tensor) -> tuple[Tensor | float, Tensor | float]:
        cfg = self.config
        means, stds = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if means is not None and stds is not None:
            shape = (len(means), 1, 1)
            return (torch.tensor(means, device=like.device, dtype=like.dtype).reshape(shape),
                    torch.tensor(stds, device=like.device, dtype=like.dtype).reshape(shape))
        return getattr(cfg, "shift_factor", None) or 0.0, 1.0

    def last_decoder_layer(self) -> nn.Parameter:
        """The weight of the decoder's output convolution (where the adaptive GAN weight compares gradients)."""
        return self.net.decoder.conv_out.weight

    # -- the diffusers layout ------------------------------------------------------------------------
    def export(self, format: str, directory: Path) -> None:
        """Write ``directory`` in diffusers' layout (config.json with ``_class_name``,
        ``diffusion_pytorch_model.safetensors``), which ``diffusers.<class>.from_pretrained`` loads."""
        if format != "diffusers":
            raise ConfigError(f"{self.variant_name} saves as 'zoo' or 'diffusers', not {format!r}")
        self.net.register_to_config(**diffusers_kwargs(self.config))  # settings changed since (scaling_factor)
        self.net.save_pretrained(directory, safe_serialization=True)


class KLModel(DiffusersAutoencoder):
    """``AutoencoderKL``: ``encode`` returns the diagonal Gaussian q(z|x) over (latent_channels, h, w)."""

    class_name = "AutoencoderKL"

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        dist = self.net.encode(self.to_net(x)).latent_dist
        return DiagonalGaussian(dist.mean, dist.logvar)


class TinyModel(DiffusersAutoencoder):
    """``AutoencoderTiny`` (TAESD): a deterministic encoder, ``encode`` returns a point mass."""

    class_name = "AutoencoderTiny"

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.config.encoder_block_out_channels) - 1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        return PointMass(self.net.encode(self.to_net(x)).latents)

    def latent_to_image(self, z: Tensor) -> Tensor:
        """TAESD's latent in [0, 1] (``latent_magnitude``, ``latent_shift``), for storing it as an image."""
        return self.net.scale_latents(z)

    def latent_from_image(self, image: Tensor) -> Tensor:
        """The inverse of :meth:`latent_to_image` (within its clamping)."""
        return self.net.unscale_latents(image)

    def last_decoder_layer(self) -> nn.Parameter:
        return self.net.decoder.layers[-1].weight


class VQModelWrapper(DiffusersAutoencoder):
    """``VQModel``: ``encode`` returns the quantised code; ``decode`` quantises what it is given, as diffusers does."""

    class_name = "VQModel"

    @property
    def latent_channels(self) -> int:
        return self.config.vq_embed_dim or self.config.latent_channels

    def encode(self, x: Tensor, y: Tensor | None = None) -> QuantizedCode:
        encoded = self.net.encode(self.to_net(x)).latents
        quantizer = self.net.quantize
        straight_through, _, (_, _, indices) = quantizer(encoded)
        indices = indices.reshape(encoded.shape[0], *encoded.shape[2:])
        codebook = quantizer.embedding.weight
        exact = codebook[indices].movedim(-1, 1)  # the code vectors themselves
        return QuantizedCode(straight_through if self.training else exact, indices, codebook, encoded)


def likelihood_nll(decoded: Tensor, x: Tensor, likelihood: str) -> Tensor:
    """-log Laplace(x; decoded, 1) or -log N(x; decoded, 1) summed over one example, in float32."""
    diff = (x.float() - decoded.float()).flatten(-3)
    nll = diff.abs() + math.log(2.0) if likelihood == "l1" else 0.5 * diff.pow(2) + 0.5 * math.log(2 * math.pi)
    return nll.sum(-1)


def _is_distance(network: Any) -> bool:
    """Whether ``network`` takes two image batches (a distance) rather than one (a feature network)."""
    forward = network.forward if isinstance(network, nn.Module) else network
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def _timm_features(spec: str, pretrained: bool) -> nn.Module:
    """A timm model's feature maps (``features_only``), pretrained from the local Hugging Face cache if asked."""
    import timm

    name = spec.removeprefix("timm:")
    try:
        return timm.create_model(name, pretrained=pretrained, features_only=True)
    except Exception as err:  # timm raises RuntimeError for unknown names, hub errors for missing weights
        raise ConfigError(f"perceptual_network {spec!r}: timm could not create it ({type(err).__name__}: {err}). "
                          f"Use a timm model name (timm.list_models()); pretrained weights must be in the local "
                          f"Hugging Face cache when there is no network") from err


# -- the variants ---------------------------------------------------------------------------------------


class DiffusersVariant(Variant):
    """Shared loss, training step and evaluation of the wrapped diffusers autoencoders."""

    model_class: ClassVar[type[DiffusersAutoencoder]]
    has_likelihood = True
    monitored_term = "reconstruction"
    metric_names = {
        "psnr": "PSNR of the reconstructions in dB (images in [0, 1]; torchmetrics)",
        "ssim": "SSIM of the reconstructions (Gaussian window 11, sigma 1.5; torchmetrics)",
        **{f"latent_mean_{c}": f"mean of channel {c} of the diffusion model's (scaled) latent" for c in range(32)},
        **{f"latent_std_{c}": f"standard deviation of channel {c} of the diffusion model's (scaled) latent"
           for c in range(32)},
    }

    @property
    def description(self) -> str:  # type: ignore[override]
        note = "" if diffusers_available() else f" (needs diffusers: {EXTRA})"
        return self.summary + note

    summary: ClassVar[str] = ""

    def build(self, config: Any) -> DiffusersAutoencoder:
        return self.model_class(config)

    def config_from_diffusers(self, data: dict[str, Any], source: str) -> Any:
        """A config from a diffusers config.json: its ``_``-keys and the keys the installed diffusers class does
        not take are dropped (as diffusers itself does, with a log line); a key diffusers takes and this
        variant does not know is an error (building without it could build another network); the zoo's
        settings take their defaults."""
        class_name = self.model_class.class_name
        accepted = set(inspect.signature(diffusers_class(class_name).__init__).parameters) - {"self"}
        known = {f.name for f in fields(self.config_class)}
        keys = {k for k in data if not k.startswith("_")}
        unknown = sorted((keys & accepted) - known)
        if unknown:
            raise ConfigError(f"{source}: diffusers' {class_name} takes {', '.join(unknown)}, which this ae-zoo's "
                              f"{self.name!r} does not know: upgrade ae-zoo, or remove the key(s) if their value is "
                              f"diffusers' default")
        ignored = sorted(keys - accepted)
        if ignored:
            logger.info("%s: ignoring %s, which diffusers' %s does not take", source, ", ".join(ignored), class_name)
        return config_from_dict(self.config_class, {k: data[k] for k in keys & accepted}, source=source)

    def tiny_config(self) -> Any:
        raise NotImplementedError

    # -- the loss ------------------------------------------------------------------------------------
    def latent_terms(self, model: DiffusersAutoencoder, posterior: Posterior) -> tuple[Tensor, dict[str, Tensor]]:
        """The latent's own part of the loss (weighted) and its terms; none for a deterministic latent."""
        return posterior.mode().new_zeros(()), {}

    def reconstruction_terms(self, model: DiffusersAutoencoder, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(decoded images in the model's range, the non-adversarial loss, its terms) for images ``x`` in the
        model's range."""
        posterior = model.encode(x)
        decoded = model.decode(posterior.sample() if model.training else posterior.mode())
        recon = likelihood_nll(decoded, x, model.config.likelihood).mean()
        latent_loss, terms = self.latent_terms(model, posterior)
        total = recon + latent_loss
        terms = {"reconstruction": recon, **terms}
        if model.config.perceptual_weight > 0 and model.perceptual is not None:
            network = model.perceptual.to(x.device) if isinstance(model.perceptual, nn.Module) else model.perceptual
            perceptual = network(model.to_net(x), model.to_net(decoded)).reshape(len(x)).mean()
            total = total + model.config.perceptual_weight * perceptual
            terms["perceptual"] = perceptual
        return decoded, total, terms

    def loss(self, model: DiffusersAutoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        """The autoencoder's loss without the adversarial term (what validation and evaluation compare), for a
        batch of the zoo's [0, 1] images (handed to the model in its ``image_range``)."""
        x, _ = split_batch(batch)
        _, total, terms = self.reconstruction_terms(model, model_input(model, x))
        return LossOutput(total, terms)

    def configure_optimizers(self, model: DiffusersAutoencoder, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        networks = [p for name, p in model.named_parameters() if not name.startswith("discriminator.")]
        optimizers = {"model": make_adam(networks, train_config)}
        if hasattr(model, "discriminator"):
            optimizers["discriminator"] = make_adam(model.discriminator.parameters(), train_config)
        return optimizers

    def train_step(self, model: DiffusersAutoencoder, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        """One step; with a discriminator (from ``disc_start`` on) the autoencoder's and the discriminator's
        gradients are taken separately (``autograd.grad`` on each one's parameters) before either steps."""
        if "discriminator" not in optimizers:
            return super().train_step(model, batch, optimizers, step=step)
        ctx = step_context()
        cfg = model.config
        x, _ = split_batch(batch)
        x = model_input(model, x)
        adversarial = step >= cfg.disc_start
        with ctx.autocast():
            decoded, total, terms = self.reconstruction_terms(model, x)
            off = total.new_zeros(())  # the adversarial terms before disc_start: reported as 0, every step alike
            terms.update(generator=off, adaptive_weight=off, discriminator=off)
            if adversarial:
                generator = -model.discriminator(model.to_net(decoded)).float().mean()
                weight = adaptive_weight(terms["reconstruction"], generator, model.last_decoder_layer())
                total = total + cfg.disc_weight * weight * generator
                real = model.discriminator(model.to_net(x)).float()
                fake = model.discriminator(model.to_net(decoded.detach())).float()
                disc = F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
                terms.update(generator=generator, adaptive_weight=weight, discriminator=disc)
        out = LossOutput(total, terms)
        ctx.ensure_finite(out, step)
        networks = [p for name, p in model.named_parameters() if not name.startswith("discriminator.")]
        objectives = [(total, networks)]
        if adversarial:
            objectives.append((terms["discriminator"], list(model.discriminator.parameters())))
        ctx.backward_per_objective(objectives)
        ctx.step(optimizers["model"])
        if adversarial:
            ctx.step(optimizers["discriminator"])
        return out.detached()

    # -- evaluation ------------------------------------------------------------------------------------
    def metrics(self, model: DiffusersAutoencoder, data: Any, *, seed: int = 0) -> dict[str, float]:
        """PSNR and SSIM of the reconstructions, and every channel's mean and std of the scaled latent (a
        wrong scaling factor shows as a std far from 1)."""
        from zoo.image_quality import reconstruction_quality

        return {**reconstruction_quality(model, data), **latent_channel_statistics(model, data)}


def latent_channel_statistics(model: DiffusersAutoencoder, data: Any) -> dict[str, float]:
    """Mean and standard deviation of every channel of :meth:`~DiffusersAutoencoder.to_diffusion_latent` of the
    data's latent modes, over examples and positions (float64)."""
    device = next(model.parameters()).device
    total = squares = None
    count = 0
    for batch in data.batches(64, shuffle=False):
        latent = model.to_diffusion_latent(posterior_of(model, batch[0].to(device)).mode()).double()
        per_channel = latent.transpose(0, 1).flatten(1)
        total = per_channel.sum(1) if total is None else total + per_channel.sum(1)
        squares = per_channel.pow(2).sum(1) if squares is None else squares + per_channel.pow(2).sum(1)
        count += per_channel.shape[1]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(0).sqrt()
    return {**{f"latent_mean_{c}": float(v) for c, v in enumerate(mean)},
            **{f"latent_std_{c}": float(v) for c, v in enumerate(std)}}


def adaptive_weight(reconstruction: Tensor, generator: Tensor, last_layer: nn.Parameter) -> Tensor:
    """Esser et al. (2021), eq. 7: ||grad_L rec|| / (||grad_L gen|| + 1e-4) at the decoder's last layer L,
    clamped to [0, 1e4] and detached."""
    rec_grad, = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    gen_grad, = torch.autograd.grad(generator, last_layer, retain_graph=True)
    return (rec_grad.norm() / (gen_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderKLVariant(DiffusersVariant):
    """diffusers' AutoencoderKL: L = -log p(x|z) + kl_weight KL (+ perceptual, + adversarial)."""

    name = "autoencoder-kl"
    config_class = AutoencoderKLConfig
    model_class = KLModel
    diffusers_class_name = "AutoencoderKL"
    summary = "Latent-diffusion KL autoencoder (diffusers AutoencoderKL: SD 1.x/2.x, SDXL, SD3, FLUX VAEs)"
    variational = True

    def tiny_config(self) -> AutoencoderKLConfig:
        return AutoencoderKLConfig(in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                                   latent_channels=2, sample_size=8, down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2)

    def latent_terms(self, model: DiffusersAutoencoder, posterior: Posterior) -> tuple[Tensor, dict[str, Tensor]]:
        kl = posterior.kl().flatten(1).sum(1).mean()
        return model.config.kl_weight * kl, {"kl": kl}


class AutoencoderTinyVariant(DiffusersVariant):
    """diffusers' AutoencoderTiny (TAESD): L = -log p(x|z) (+ perceptual, + adversarial)."""

    name = "autoencoder-tiny"
    config_class = AutoencoderTinyConfig
    model_class = TinyModel
    diffusers_class_name = "AutoencoderTiny"
    summary = "Tiny latent-diffusion autoencoder (diffusers AutoencoderTiny: TAESD, TAESDXL, TAESD3)"

    def tiny_config(self) -> AutoencoderTinyConfig:
        return AutoencoderTinyConfig(in_channels=1, out_channels=1, encoder_block_out_channels=(8, 8),
                                     decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                                     num_decoder_blocks=(1, 1), latent_channels=2, sample_size=8)


class VQModelVariant(DiffusersVariant):
    """diffusers' VQModel: L = -log p(x|z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (+ perceptual, +
    adversarial)."""

    name = "vq-model"
    config_class = VQModelConfig
    model_class = VQModelWrapper
    diffusers_class_name = "VQModel"
    summary = "VQ-GAN style autoencoder (diffusers VQModel), codebook and commitment terms"

    def tiny_config(self) -> VQModelConfig:
        return VQModelConfig(in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                             latent_channels=2, num_vq_embeddings=8, sample_size=8,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

    def latent_terms(self, model: DiffusersAutoencoder, posterior: Posterior) -> tuple[Tensor, dict[str, Tensor]]:
        chosen = posterior.codebook[posterior.indices].movedim(-1, 1).float()
        encoded = posterior.encoded.float()
        codebook = (encoded.detach() - chosen).pow(2).flatten(1).sum(1).mean()
        commitment = (encoded - chosen.detach()).pow(2).flatten(1).sum(1).mean()
        return codebook + model.config.commitment_cost * commitment, {"codebook": codebook, "commitment": commitment}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    for variant in (AutoencoderKLVariant, AutoencoderTinyVariant, VQModelVariant):
        register(variant())
