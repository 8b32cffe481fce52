"""``zoo eval --report DIR``: every metric and picture of one model in a Markdown report.

The report holds the evaluation table (:func:`zoo.evaluation.evaluate`), the per-latent table (KL,
reconstruction gain, whether the gain is below the KL, activity) and the pictures of
:mod:`zoo.pictures` that apply to the model: reconstructions; prior samples and a class grid for
generative and conditional models; linear and spherical interpolations; latent traversals sorted by
KL; the decoded 2-D manifold for a 2-D latent; a scatter of encoded test means coloured by label; the
per-latent KL / gain bar chart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.data import TensorData
from zoo.folder import atomic_write

KL_NOTE = " A latent whose gain is below its KL costs the ELBO more than it gives back."


def _picture_rows(model: nn.Module, data: TensorData, out: Path, probabilistic: bool) -> list[tuple[str, str]]:
    """Draw every picture that applies; (file name, caption) for each."""
    from zoo import pictures as pic
    from zoo.evaluation import is_generative

    classes = getattr(model.config, "num_classes", 0)
    labelled = data.y is not None
    # One example per class where there are labels, else the first ones.
    idx = torch.cat([torch.nonzero(data.y == k)[:1, 0] for k in data.y.unique()[:8]]) if labelled else torch.arange(8)
    x = data.x[idx]
    y = data.y[idx] if classes else None
    shown: list[tuple[str, str]] = []

    def grid(images: torch.Tensor, file: str, nrow: int, caption: str) -> None:
        pic.save_grid(images, out / file, nrow=nrow)
        shown.append((file, caption))

    grid(pic.reconstruction_rows(model, x, y), "reconstructions.png", len(x),
         "test inputs (top) and their reconstructions (bottom)")
    if is_generative(model):
        if classes:
            grid(pic.class_rows(model, classes, per_class=10), "classes.png", 10, "row k: 10 samples of class k")
        else:
            grid(pic.prior_samples(model, 64), "samples.png", 8, "64 samples from the prior (seed 0)")
    pairs_a, pairs_b = x[0::2][:4], x[1::2][:4]
    pair_y = y[0::2][:4] if y is not None else None
    for method in pic.INTERPOLATIONS:
        grid(pic.interpolate(model, pairs_a, pairs_b, steps=10, method=method, y=pair_y),
             f"interpolation-{method}.png", 10, f"{method} interpolation between the codes of two test inputs, per row")
    sample = data if len(data) <= 2000 else TensorData(data.x[:2000], None if data.y is None else data.y[:2000])
    images, order = pic.traversals(model, x[:1], dims=min(model.config.latent_dim, 10), y=None if y is None else y[:1],
                                   data=sample)
    grid(images, "traversals.png", 9, f"traversals of one latent per row (latents {order}, "
         f"{'most KL' if probabilistic else 'largest code variance'} first)")
    if model.config.latent_dim == 2:
        grid(pic.manifold(model, 20, y=0 if classes else None), "manifold.png", 20,
             "decoded 2-D latent grid (inverse normal CDF of evenly spaced quantiles)"
             + (" for class 0" if classes else ""))
    if labelled:
        pic.save_latent_scatter(model, data, out / "latent-scatter.png")
        shown.append(("latent-scatter.png", "encoded test means coloured by label"))
    return shown


def write_report(model: nn.Module, data: TensorData, out: str | Path, *, title: str, dataset: str | None = None,
                 metrics: dict[str, Any] | None = None, nll_samples: int = 1000) -> Path:
    """Evaluate ``model`` on ``data`` (unless ``metrics`` are given) and write ``out/report.md`` with its
    pictures; returns the report's path."""
    from zoo.cards import METRIC_NAMES
    from zoo.evaluation import evaluate, is_probabilistic
    from zoo.metrics import active_units, reconstruction_gain
    from zoo.pictures import save_latent_bars

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    probabilistic = is_probabilistic(model, data)
    if metrics is None:
        metrics = evaluate(model, data, nll_samples=nll_samples, dataset=dataset)
    gain = reconstruction_gain(model, data, replace_with="prior" if probabilistic else "marginal")
    variance = active_units(model, data)["mean_variance"] if probabilistic else None
    pictures = _picture_rows(model, data, out, probabilistic)
    if probabilistic:
        save_latent_bars(gain["kl_per_latent"], out / "latent-bars.png", gain_per_latent=gain["gain"],
                         title=f"{title}: per-latent KL and reconstruction gain")
        pictures.append(("latent-bars.png", "per-latent KL and reconstruction gain (flagged: gain below KL)"))
    rows = "\n".join(f"| {METRIC_NAMES.get(k, k)} | {v:.4f} |" if isinstance(v, float) else
                     f"| {METRIC_NAMES.get(k, k)} | {v} |" for k, v in metrics.items())
    if probabilistic:
        latent_rows = "\n".join(
            f"| {i} | {kl:.3f} | {g:.3f} | {'yes' if i in gain['below_kl'] else ''} | {var:.4f} |"
            for i, (kl, g, var) in enumerate(zip(gain["kl_per_latent"], gain["gain"], variance, strict=True)))
        latent_table = ("| latent | KL (nats) | reconstruction gain (nats) | gain < KL | Var_x E[z] (active > 0.01) |\n"
                        "| --- | --- | --- | --- | --- |\n" + latent_rows)
    else:
        latent_table = ("| latent | reconstruction gain (code -> its data mean) |\n| --- | --- |\n"
                        + "\n".join(f"| {i} | {g:.3f} |" for i, g in enumerate(gain["gain"])))
    figures = "\n\n".join(f"### {caption}\n\n![{caption}]({file})" for file, caption in pictures)
    text = f"""# {title}

Variant `{model.variant_name}`, evaluated on {dataset or "the given data"} ({len(data)} examples).

## Metrics

| metric | value |
| --- | --- |
{rows}

## Per latent

Reconstruction gain: the reconstruction NLL of the decoded {"posterior mean" if probabilistic else "code"} with
the latent replaced by {"its prior mean (0)" if probabilistic else "its mean over the data"}, minus the NLL with it
kept (per example; nats for a Bernoulli decoder).{KL_NOTE if probabilistic else ""}

{latent_table}

## Pictures

{figures}
"""
    path = out / "report.md"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
