"""Encoder, decoder and discriminator networks for any (C, H, W) input and any latent size.

``architecture`` selects the family: ``"mlp"``, ``"conv"`` (stride-2 convolutions, transposed
convolutions back, cropped to the exact input size) or ``"timm:NAME"`` (a randomly initialised timm
model as the encoder trunk, conv decoder). A condition vector (one-hot labels) is concatenated to
the input: as extra constant channels for conv/timm trunks, as extra features for the MLP.

:class:`Encoder` / :class:`Decoder` map to and from a flat latent (B, D); :class:`SpatialEncoder` /
:class:`SpatialDecoder` to and from a spatial one (B, C, h, w) at the conv trunk's resolution
(:func:`spatial_latent_shape`), as VQ-VAEs and the VAEs of latent diffusion have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
               "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def mlp(sizes: Sequence[int], activation_name: str = "relu") -> nn.Sequential:
    """Linear layers through ``sizes`` (input, hidden..., output) with ``activation_name`` between them and none
    after the last: the small networks of samplers and of hierarchical priors."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(activation(activation_name))
    return nn.Sequential(*layers)


def check_architecture(name: str) -> None:
    if name in ("mlp", "conv") or (name.startswith("timm:") and len(name) > 5):
        return
    raise ConfigError(f"unknown architecture {name!r}; use 'mlp', 'conv' or 'timm:MODEL' (e.g. 'timm:resnet18')")


class Trunk(nn.Module):
    """A sequential feature extractor that can also hand back its hidden activations.

    The sparse autoencoder's penalty needs every hidden layer's activations; ``forward_hidden``
    returns them without a second pass.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def forward_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        hidden = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, tuple(ACTIVATIONS.values())):
                hidden.append(x)
        return x, hidden


class Encoder(nn.Module):
    """x (B, C, H, W) [+ condition (B, K)] -> features (B, out_features)."""

    def __init__(self, input_shape: Sequence[int], hidden_dims: Sequence[int], out_features: int,
                 architecture: str = "mlp", activation_name: str = "relu", cond_dim: int = 0) -> None:
        super().__init__()
        check_architecture(architecture)
        c, h, w = input_shape
        self.architecture = architecture
        self.cond_dim = cond_dim
        if architecture == "mlp":
            dims = [c * h * w + cond_dim, *hidden_dims]
            layers: list[nn.Module] = [nn.Flatten()]
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
                layers += [nn.Linear(d_in, d_out), activation(activation_name)]
            self.trunk = Trunk(layers)
            trunk_features = dims[-1]
        elif architecture == "conv":
            self.trunk = Trunk([*_conv_trunk(c + cond_dim, hidden_dims, activation_name), nn.Flatten()])
            fh, fw = conv_feature_size(h, w, len(hidden_dims))
            trunk_features = (hidden_dims[-1] if hidden_dims else c + cond_dim) * fh * fw
        else:
            import timm  # imported only when a timm backbone is asked for

            try:
                self.trunk = timm.create_model(architecture[5:], pretrained=False, num_classes=0,
                                               in_chans=c + cond_dim)
            except RuntimeError as err:  # timm: "Unknown model (NAME)"
                raise ConfigError(f"architecture {architecture!r}: {err}; `timm.list_models()` names the models "
                                  f"timm knows (e.g. 'timm:resnet18')") from None
            trunk_features = self.trunk.num_features
        self.head = nn.Linear(trunk_features, out_features)

    def _prepare(self, x: Tensor, cond: Tensor | None) -> Tensor:
        if self.cond_dim == 0:
            return x
        if cond is None:
            raise ValueError("this encoder is conditional: pass the condition (e.g. labels y)")
        if self.architecture == "mlp":
            return torch.cat([x.flatten(1), cond.to(x.dtype)], dim=1)
        return _condition_planes(x, cond, self.cond_dim, "encoder")

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(self._prepare(x, cond)))

    def forward_hidden(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Features plus the trunk's hidden activations (MLP and conv trunks)."""
        if not isinstance(self.trunk, Trunk):
            raise ConfigError("hidden activations are available for 'mlp' and 'conv' encoders only")
        features, hidden = self.trunk.forward_hidden(self._prepare(x, cond))
        return self.head(features), hidden


class Decoder(nn.Module):
    """z (B, D) [+ condition (B, K)] -> output (B, C, H, W): logits or means, no output activation."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int], output_shape: Sequence[int],
                 architecture: str = "mlp", activation_name: str = "relu", cond_dim: int = 0) -> None:
        super().__init__()
        check_architecture(architecture)
        c, h, w = output_shape
        self.output_shape = (c, h, w)
        self.cond_dim = cond_dim
        hidden = list(reversed(hidden_dims))
        if architecture != "mlp" and not hidden:
            raise ConfigError(f"the {architecture!r} decoder needs at least one entry in hidden_dims (e.g. [32, 64])")
        if architecture == "mlp":
            dims = [latent_dim + cond_dim, *hidden]
            layers: list[nn.Module] = []
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
                layers += [nn.Linear(d_in, d_out), activation(activation_name)]
            layers += [nn.Linear(dims[-1], c * h * w), nn.Unflatten(1, (c, h, w))]
        else:  # conv and timm encoders both decode with transposed convolutions
            fh, fw = conv_feature_size(h, w, len(hidden))
            layers = [nn.Linear(latent_dim + cond_dim, hidden[0] * fh * fw), activation(activation_name),
                      nn.Unflatten(1, (hidden[0], fh, fw))]
            for c_in, c_out in zip(hidden, [*hidden[1:], hidden[-1]], strict=True):
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), activation(activation_name)]
            layers.append(nn.Conv2d(hidden[-1], c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_dim:
            if cond is None:
                raise ValueError("this decoder is conditional: pass the condition (e.g. labels y)")
            z = torch.cat([z, cond.to(z.dtype)], dim=1)
        out = self.net(z)
        c, h, w = self.output_shape
        return out[:, :, :h, :w]


class Discriminator(nn.Module):
    """x -> (logit of "real", features at the chosen hidden layer) for VAE-GAN."""

    def __init__(self, input_shape: Sequence[int], hidden_dims: Sequence[int], architecture: str = "mlp",
                 activation_name: str = "leaky_relu", feature_layer: int = -1) -> None:
        super().__init__()
        encoder = Encoder(input_shape, hidden_dims, 1, "conv" if architecture.startswith("timm:") else architecture,
                          activation_name)
        self.trunk, self.head = encoder.trunk, encoder.head
        n_hidden = len(hidden_dims)
        if not -n_hidden <= feature_layer < n_hidden:
            raise ConfigError(f"feature_layer {feature_layer} out of range for {n_hidden} hidden layers")
        self.feature_layer = feature_layer % n_hidden

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features, hidden = self.trunk.forward_hidden(x)
        return self.head(features).squeeze(-1), hidden[self.feature_layer].flatten(1)


def _conv_trunk(in_channels: int, hidden_dims: Sequence[int], activation_name: str) -> list[nn.Module]:
    """Stride-2 3x3 convolutions, each followed by the activation: halves H and W per layer (rounding up)."""
    chans = [in_channels, *hidden_dims]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), activation(activation_name)]
    return layers


def _condition_planes(x: Tensor, cond: Tensor | None, cond_dim: int, what: str) -> Tensor:
    """``x`` (B, C, H, W) with the condition vector appended as ``cond_dim`` constant channels."""
    if cond_dim == 0:
        return x
    if cond is None:
        raise ValueError(f"this {what} is conditional: pass the condition (e.g. labels y)")
    planes = cond.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, planes], dim=1)


def spatial_latent_shape(input_shape: Sequence[int], hidden_dims: Sequence[int],
                         latent_channels: int) -> tuple[int, int, int]:
    """(latent_channels, h, w): the code grid of a :class:`SpatialEncoder` with these ``hidden_dims``."""
    _, h, w = input_shape
    fh, fw = conv_feature_size(h, w, len(hidden_dims))
    return latent_channels, fh, fw


class SpatialEncoder(nn.Module):
    """x (B, C, H, W) [+ condition (B, K)] -> a code grid (B, out_channels, h, w).

    The conv trunk of :class:`Encoder` without its flattening, and a 1x1 convolution as the head, so
    every position of the grid describes its own patch of the image.
    """

    def __init__(self, input_shape: Sequence[int], hidden_dims: Sequence[int], out_channels: int,
                 activation_name: str = "relu", cond_dim: int = 0) -> None:
        super().__init__()
        if not hidden_dims:
            raise ConfigError("a spatial latent needs at least one conv layer in hidden_dims")
        self.cond_dim = cond_dim
        self.trunk = Trunk(_conv_trunk(input_shape[0] + cond_dim, hidden_dims, activation_name))
        self.head = nn.Conv2d(hidden_dims[-1], out_channels, 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(_condition_planes(x, cond, self.cond_dim, "encoder")))


class SpatialDecoder(nn.Module):
    """A code grid (B, latent_channels, h, w) [+ condition (B, K)] -> output (B, C, H, W), no output
    activation: a 3x3 convolution into the widest hidden width, stride-2 transposed convolutions back
    up (mirroring :class:`SpatialEncoder`), a 3x3 convolution to the image channels, cropped to H x W."""

    def __init__(self, latent_channels: int, hidden_dims: Sequence[int], output_shape: Sequence[int],
                 activation_name: str = "relu", cond_dim: int = 0) -> None:
        super().__init__()
        if not hidden_dims:
            raise ConfigError("a spatial latent needs at least one conv layer in hidden_dims")
        c, h, w = output_shape
        self.output_shape = (c, h, w)
        self.cond_dim = cond_dim
        hidden = list(reversed(hidden_dims))
        layers: list[nn.Module] = [nn.Conv2d(latent_channels + cond_dim, hidden[0], 3, padding=1),
                                   activation(activation_name)]
        for c_in, c_out in zip(hidden, [*hidden[1:], hidden[-1]], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), activation(activation_name)]
        layers.append(nn.Conv2d(hidden[-1], c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        out = self.net(_condition_planes(z, cond, self.cond_dim, "decoder"))
        _, h, w = self.output_shape
        return out[:, :, :h, :w]


def conv_feature_size(h: int, w: int, n_layers: int) -> tuple[int, int]:
    """Spatial size after ``n_layers`` stride-2 convolutions (kernel 3, padding 1): ceil halving."""
    for _ in range(n_layers):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


class CodeDiscriminator(nn.Sequential):
    """codes (B, D) -> a logit each (B,): an MLP with leaky-ReLU (0.2) hidden layers, for the discriminators
    that judge codes (FactorVAE's total-correlation critic, the adversarial autoencoder's prior critic)."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        width = latent_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        super().__init__(*layers, nn.Linear(width, 1))

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z).squeeze(-1)
