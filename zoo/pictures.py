"""Pictures of a model: image grids of reconstructions, samples, interpolations, latent traversals and the 2-D
manifold (PNG through torchvision), and matplotlib plots of the latent space (scatter of codes, per-latent KL).

Every picture works through the model contract (:mod:`zoo.contract`), for flat latents (D,) and spatial ones
(C, h, w) alike: codes are the posterior's ``mode()`` (a Gaussian's mean, a deterministic code, a VQ model's
quantised code); traversals move one latent unit (a latent, or a channel at one position); scatters and
interpolations treat a spatial code as one flattened vector.

matplotlib and torchvision are imported inside the functions that draw, so ``import zoo.pictures`` stays light.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.contract import (
    decode_images,
    has,
    is_spatial,
    labels_for,
    latent_groups,
    latent_kl,
    latent_shape,
    posterior_of,
    reconstruct,
    sample_images,
    unit_mean,
    unit_sum,
)
from zoo.metrics import costly_latents

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.data import TensorData


@torch.no_grad()
def reconstruction_rows(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Inputs stacked above their eval-mode reconstructions: (2 * n, C, H, W)."""
    was_training = model.training
    model.eval()
    x = x.to(next(model.parameters()).device)
    recon = reconstruct(model, x, y).float().clamp(0, 1)
    model.train(was_training)
    return torch.cat([x.float().cpu(), recon.cpu()])


@torch.no_grad()
def class_rows(model: nn.Module, num_classes: int, per_class: int, seed: int = 0) -> Tensor:
    """One row per class of a conditional model's samples: (num_classes * per_class, C, H, W)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    rows = [sample_images(model, per_class, y=k, generator=generator).float().clamp(0, 1).cpu()
            for k in range(num_classes)]
    return torch.cat(rows)


@torch.no_grad()
def prior_samples(model: nn.Module, n: int, y: int | None = None, seed: int = 0, sampler: str | None = None) -> Tensor:
    """``n`` samples in [0, 1] on the CPU: from the prior, or through the fitted ex-post ``sampler``."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return sample_images(model, n, y=y, generator=generator, sampler=sampler).float().clamp(0, 1).cpu()


def save_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write ``images`` (N, C, H, W in [0, 1]) as one PNG grid, ``nrow`` images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path


# --- Latent-space pictures of any trained model -------------------------------------------------------------------
#
# Codes are the mode of the posterior ``encode`` returns. Tensor-returning functions run under no_grad in eval mode,
# restore the training flag and return images (N, C, H, W) in [0, 1] on the CPU; save_* functions write a PNG and
# return its path.

INTERPOLATIONS = ("linear", "slerp")
#: Below this sin(angle) two codes count as (anti)parallel and slerp falls back to linear interpolation.
PARALLEL_EPS = 1e-3
#: Images encoded at once when a whole data set is encoded (bounds memory, not results).
ENCODE_BATCH = 500


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the body; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_batch(x: Tensor) -> Tensor:
    """One image (C, H, W) or a batch (N, C, H, W) -> a batch."""
    if x.dim() not in (3, 4):
        raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(x.shape)}")
    return x.unsqueeze(0) if x.dim() == 3 else x


def _repeat_labels(y: Tensor | int | None, times: int) -> Tensor | int | None:
    """Labels of N inputs -> labels of their N * ``times`` decodes (each repeated ``times`` in a row)."""
    return y.repeat_interleave(times, dim=0) if isinstance(y, Tensor) else y


def _images(decoded: Tensor) -> Tensor:
    return decoded.float().clamp(0, 1).cpu()


def _code(model: nn.Module, x: Tensor, y: Tensor | int | None) -> Tensor:
    """The point in latent space x stands for: the mode of its posterior, (N, *latent_shape)."""
    return posterior_of(model, x.to(_device(model)), y).mode()


def _encode_all(model: nn.Module, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Codes (N, *latent_shape) of a whole data set, and their KL per element (same shape) for a variational
    model with a closed-form one (:func:`zoo.contract.latent_kl`; None otherwise). Encoded ``ENCODE_BATCH``
    images at a time; labels reach conditional models only.
    """
    device = _device(model)
    labels = labels_for(model, y)
    variational = has(model, "variational")
    codes, kls = [], []
    for start in range(0, len(x), ENCODE_BATCH):
        batch_y = None if labels is None else labels[start:start + ENCODE_BATCH].to(device)
        posterior = posterior_of(model, x[start:start + ENCODE_BATCH].to(device), batch_y)
        codes.append(posterior.mode().float().cpu())
        kl = latent_kl(model, posterior) if variational else None
        if kl is not None:
            kls.append(kl.float().cpu())
    return torch.cat(codes), torch.cat(kls) if kls else None


def slerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation between codes ``a`` and ``b`` (last dim) at fraction ``t`` (0 -> a, 1 -> b).

    Follows the great circle through a and b (White 2016, "Sampling generative networks"): for codes of equal norm
    every point keeps that norm, whereas the linear midpoint of two Gaussian codes has a norm atypical of the prior.
    (Anti)parallel codes, whose circle is ill-defined, are interpolated linearly. ``t`` broadcasts against
    ``a[..., :1]``: codes (P, 1, D) with t (T, 1) give (P, T, D).
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    safe_sin = sin.clamp_min(PARALLEL_EPS)
    spherical = torch.sin((1 - t) * omega) / safe_sin * a + torch.sin(t * omega) / safe_sin * b
    linear = (1 - t) * a + t * b
    return torch.where(sin < PARALLEL_EPS, linear, spherical)


def interpolate(model: nn.Module, x_a: Tensor, x_b: Tensor, steps: int = 10, method: str = "linear",
                y: Tensor | int | None = None) -> Tensor:
    """Decodes of ``steps`` codes from x_a's to x_b's: one row per pair, (P * steps, C, H, W).

    ``x_a`` and ``x_b`` are one image each (C, H, W) or P pairs (P, C, H, W). Codes are posterior modes (a VAE's
    means, an autoencoder's codes; a spatial code as one flattened vector), interpolated ``"linear"``ly or by
    ``"slerp"``; the first and last images of a row are
    the decodes of the endpoints' codes. For a conditional model ``y`` (one label, or P labels) conditions both
    encodes and the row's decodes, so a row morphs the style within that class.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation method {method!r}: choose one of {', '.join(INTERPOLATIONS)}")
    if steps < 2:
        raise ValueError(f"an interpolation needs steps >= 2 (both endpoints), got {steps}")
    x_a, x_b = _as_batch(x_a), _as_batch(x_b)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    with _evaluating(model):
        shape = latent_shape(model)
        a = _code(model, x_a, y).flatten(1)[:, None]  # (P, 1, D): a spatial code as one vector
        b = _code(model, x_b, y).flatten(1)[:, None]
        t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)[:, None]  # (T, 1)
        z = slerp(a, b, t) if method == "slerp" else (1 - t) * a + t * b  # (P, T, D)
        return _images(decode_images(model, z.reshape(-1, *shape), _repeat_labels(y, steps)))


def _choose_dims(score: Tensor, dims: int | Sequence[int] | None, units: range | None = None,
                 where: str = "the latent") -> list[int]:
    """Latent units to show, most informative (highest ``score``) first: all of ``units`` (default: every unit),
    the top ``dims`` of them, or those listed (which must lie in ``units``); ``where`` names ``units`` in errors."""
    units = range(len(score)) if units is None else units
    order = [u for u in torch.argsort(score, descending=True, stable=True).tolist() if u in units]
    if dims is None:
        return order
    if isinstance(dims, int):
        if not 1 <= dims <= len(units):
            raise ValueError(f"dims={dims}: ask for 1..{len(units)} latent units ({where} has {len(units)})")
        return order[:dims]
    chosen = set(dims)
    if not chosen or len(chosen) != len(dims) or any(d not in units for d in chosen):
        raise ValueError(f"dims must be distinct latent unit indices of {where} ({units.start}..{units.stop - 1}), "
                         f"got {list(dims)}")
    return [d for d in order if d in chosen]


def default_position(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Where a traversal of a spatial latent moves each channel: the centre of the code grid."""
    return tuple(size // 2 for size in shape[1:])


def traversals(model: nn.Module, x: Tensor, *, dims: int | Sequence[int] | None = None, steps: int = 9,
               span: float = 3.0, y: Tensor | int | None = None, data: TensorData | None = None,
               position: Sequence[int] | None = None, group: str | None = None) -> tuple[Tensor, list[int]]:
    """Latent traversals around one image's code: (images (len(order) * steps, C, H, W), order).

    Row r varies latent unit ``order[r]`` alone over ``steps`` values, the rest of the code staying at x's, so a
    row shows what that one unit controls. A unit is a latent of a flat latent; of a spatial latent (C, h, w) it
    is a channel, moved at one ``position`` (i, j) of the grid (default: the centre, :func:`default_position`).
    For a variational model with a N(0, I) prior and a per-unit KL the values are linspace(-span, span) in prior
    units (absolute, not offsets), and rows are sorted by mean KL per unit (descending; a channel's summed over its
    positions) over ``data`` when given, else by x's own KL: informative units first, collapsed ones (KL ~ 0, rows
    that do not change) last. Any other model (no prior, or no per-unit KL: a mixture prior, a flow posterior)
    needs ``data``, whose per-unit code mean and standard deviation set the values (mean + linspace(-span, span)
    * std) and whose code variance sets the order.
    ``dims``: None for every unit, an int k for the k first in that order, or a list of units to show (still
    sorted). ``group`` keeps to the units of that latent group (:func:`zoo.contract.latent_groups`: a layer of a
    hierarchical model). ``y`` is x's label for a conditional model; ``data.y`` are the data's labels.
    """
    x = _as_batch(x)
    if len(x) != 1:
        raise ValueError(f"traversals go around one image's code: pass one image, got a batch of {len(x)}")
    if steps < 2:
        raise ValueError(f"a traversal needs steps >= 2, got {steps}")
    shape = latent_shape(model)
    where = _position(shape, position)
    with _evaluating(model):
        posterior = posterior_of(model, x.to(_device(model)), y)
        base = posterior.mode()[0]
        own_kl = latent_kl(model, posterior) if has(model, "variational") else None
        if own_kl is not None:
            kl = _encode_all(model, data.x, data.y)[1] if data is not None else own_kl
            score = unit_sum(kl, shape).mean(0)
            centre, scale = torch.zeros(shape[0]), torch.ones(shape[0])
        else:
            if data is None:
                raise ValueError("a model without a standard normal prior and per-unit KL has no prior units to "
                                 "traverse in: pass data=... (e.g. the test set) to scale each latent unit by its "
                                 "spread over the data and order by variance")
            codes = _encode_all(model, data.x, data.y)[0]
            at = codes[(slice(None), slice(None), *where)]  # (N, units) at the traversed position
            score, centre, scale = unit_mean(codes.var(0), shape), at.mean(0), at.std(0)
        units, where_units = _group_units(model, group)
        order = _choose_dims(score, dims, units, where_units)
        values = torch.linspace(-span, span, steps, device=base.device, dtype=base.dtype)
        z = base.repeat(len(order), steps, *([1] * len(shape)))  # (rows, steps, *latent_shape)
        for row, d in enumerate(order):
            z[(row, slice(None), d, *where)] = centre[d].to(base) + values * scale[d].to(base)
        images = _images(decode_images(model, z.reshape(-1, *shape), _repeat_labels(y, len(order) * steps)))
    return images, order


def _group_units(model: nn.Module, group: str | None) -> tuple[range, str]:
    """The units of latent group ``group`` (every unit for None) and how errors name them."""
    if group is None:
        return range(latent_shape(model)[0]), "the latent"
    groups = {g.name: g for g in latent_groups(model)}
    if group not in groups:
        raise ValueError(f"no latent group {group!r}: this model's groups are {', '.join(groups)}")
    return groups[group].units, f"group {group}"


def _position(shape: tuple[int, ...], position: Sequence[int] | None) -> tuple[int, ...]:
    """The grid position a traversal of a spatial latent moves (empty for a flat latent), checked."""
    if not is_spatial(shape):
        if position is not None:
            raise ValueError(f"position applies to spatial latents; this latent is flat {shape}")
        return ()
    where = default_position(shape) if position is None else tuple(int(p) for p in position)
    if len(where) != len(shape) - 1 or any(not 0 <= p < size for p, size in zip(where, shape[1:], strict=True)):
        raise ValueError(f"position {tuple(position or ())} is not on the {'x'.join(map(str, shape[1:]))} code grid")
    return where


def manifold(model: nn.Module, n: int = 20, *, bound: float = 0.05, y: int | None = None) -> Tensor:
    """The learned manifold of a 2-D latent VAE (Kingma & Welling 2014, fig. 4): (n * n, C, H, W).

    Decodes an n x n grid of z = (Phi^-1(u), Phi^-1(v)) for u, v evenly spaced in [bound, 1 - bound], so equal
    prior mass lies between neighbours: z1 grows left to right, z2 bottom to top. ``y`` is the class of a
    conditional model.
    """
    shape = latent_shape(model)
    if shape != (2,):
        raise ValueError(f"this model's latent has shape {shape} and manifold() needs a flat 2-D latent (2,); "
                         f"use traversals() to show one latent unit at a time")
    if not 0 < bound < 0.5:
        raise ValueError(f"bound is the outermost quantile and must lie in (0, 0.5), got {bound}")
    with _evaluating(model):
        device = _device(model)
        grid = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(bound, 1 - bound, n)).to(device)
        z = torch.stack([grid.repeat(n), grid.flip(0).repeat_interleave(n)], dim=1)  # row i: z2 = grid[n - 1 - i]
        return _images(decode_images(model, z, y))


def _model_name(model: nn.Module) -> str:
    info = getattr(model, "pretrained_info", {}) or {}
    return info.get("name") or getattr(model, "variant_name", "") or type(model).__name__


def _pca_2d(points: Tensor) -> tuple[Tensor, Tensor]:
    """Projection of (N, D) points on their two principal axes, and the fraction of variance each explains."""
    centred = points - points.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:2].T, s[:2].pow(2) / s.pow(2).sum()


def save_latent_scatter(model: nn.Module, data: TensorData, path: str | Path, *, max_points: int = 2000,
                        dims: tuple[int, int] | None = None, seed: int = 0, title: str | None = None) -> Path:
    """Scatter of the data's codes (posterior modes) coloured by label: how the classes sit in z.

    Plots latents ``dims``; by default both latents of a 2-D latent, or for a wider latent (a spatial one
    flattened) its projection on the two principal axes (PCA), as the default title says (``title`` replaces
    it). At most ``max_points`` examples (a seeded random subset), coloured by ``data.y`` with a legend (a
    colorbar above 20 classes).
    """
    x, y = data.x, data.y
    if len(x) > max_points:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]
        x, y = x[keep], None if y is None else y[keep]
    with _evaluating(model):
        codes = _encode_all(model, x, y)[0]
    shape = latent_shape(model)
    what = "posterior means" if has(model, "variational") else "codes"
    if is_spatial(shape):
        what = f"{'x'.join(map(str, shape))} {what} (flattened)"
    codes = codes.flatten(1)
    latent_dim = codes.shape[1]
    if dims is None and latent_dim == 2:
        dims = (0, 1)
    if dims is not None:
        if len(dims) != 2 or not all(0 <= d < latent_dim for d in dims):
            raise ValueError(f"dims must be two latent indices in 0..{latent_dim - 1}, got {dims}")
        points, axes = codes[:, list(dims)], (f"z[{dims[0]}]", f"z[{dims[1]}]")
        title = title or f"{_model_name(model)}: {what}, latents {dims[0]} and {dims[1]} of {latent_dim}"
    elif latent_dim > 2:
        points, explained = _pca_2d(codes)
        axes = (f"PC 1 ({explained[0]:.0%} of variance)", f"PC 2 ({explained[1]:.0%})")
        title = title or f"{_model_name(model)}: {latent_dim}-D {what}, PCA projection to 2-D"
    else:
        raise ValueError(f"a scatter needs a latent of at least 2 dims, this one has {latent_dim}")

    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state to disturb

    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
    elif len(classes := y.unique()) <= 20:
        colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, k in enumerate(classes.tolist()):
            mask = y == k
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, color=colours(i), label=str(k))
        ax.legend(title="label", markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        dots = ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, c=y, cmap="viridis")
        fig.colorbar(dots, ax=ax, label="label")
    ax.set(title=title, xlabel=axes[0], ylabel=axes[1])
    return _save_figure(fig, path)


def _save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def save_latent_bars(kl_per_latent: Sequence[float], path: str | Path, *,
                     gain_per_latent: Sequence[float] | None = None, title: str | None = None) -> Path:
    """Bar chart per latent of its mean KL (nats) and, when given, its reconstruction gain beside it.

    Latents whose gain is below their KL (see :func:`costly_latents`) get a hatched, red-edged KL bar and a red
    marker above the pair (visible even when both bars are ~0, as for collapsed latents), listed in the legend:
    the ELBO pays more for them than they return.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    kl = [float(v) for v in kl_per_latent]
    index = list(range(len(kl)))
    fig = Figure(figsize=(max(6.0, 0.4 * len(kl) + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    handles = [Patch(facecolor="tab:blue", label="KL")]
    if gain_per_latent is None:
        ax.bar(index, kl, width=0.7, color="tab:blue")
    else:
        gain = [float(v) for v in gain_per_latent]
        costly = costly_latents(kl, gain)
        ax.bar([i - 0.2 for i in index], kl, width=0.4, color="tab:blue",
               hatch=["//" if i in costly else "" for i in index],
               edgecolor=["tab:red" if i in costly else "tab:blue" for i in index])
        ax.bar([i + 0.2 for i in index], gain, width=0.4, color="tab:orange")
        handles.append(Patch(facecolor="tab:orange", label="reconstruction gain"))
        if costly:
            top = max(0.0, *kl, *gain)
            marks = ax.scatter(costly, [max(0.0, kl[i], gain[i]) + 0.04 * top for i in costly], marker="v",
                               color="tab:red", zorder=3)
            marks.set_label(f"gain < KL (latent{'s' if len(costly) > 1 else ''} {', '.join(map(str, costly))})")
            handles += [Patch(facecolor="tab:blue", edgecolor="tab:red", hatch="//", label="KL of a flagged latent"),
                        marks]
    ax.legend(handles=handles)
    ax.set_xticks(index)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(xlabel="latent", ylabel="nats per example",
           title=title or ("Per-latent KL" if gain_per_latent is None else "Per-latent KL and reconstruction gain"))
    return _save_figure(fig, path)
