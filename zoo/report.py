"""``zoo eval --report DIR``: every metric and picture of one model in a Markdown report.

The report holds the evaluation table (:func:`zoo.evaluation.evaluate`, the variant's own metrics
included), one line for every measurement that does not apply to the model and why
(:func:`zoo.evaluation.skipped`), the per-unit table (KL, reconstruction gain, whether the gain is
below the KL, activity; per latent for a flat latent, per channel for a spatial one, as the table
says) and the pictures of :mod:`zoo.pictures` that apply: reconstructions; prior samples and a class
grid for generative and conditional models; linear and spherical interpolations; latent traversals
sorted by KL; the decoded 2-D manifold for a flat 2-D latent; a scatter of encoded test codes
coloured by label; the per-unit KL / gain bar chart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.contract import has, has_unit_kl, is_spatial, latent_groups, latent_shape, posterior_of, unit_name
from zoo.data import TensorData
from zoo.distributions import QuantizedCode
from zoo.folder import atomic_write

#: The exact per-unit cost in the report's table: draws per example, and at most this many examples, evenly
#: spaced over the data (a latent-diffusion decoder makes units x draws passes over them).
EXACT_SAMPLES = 2
EXACT_EXAMPLES = 500
KL_NOTE = (" This gain is a proxy, at the posterior mean. The exact cost of a latent is what the negative ELBO gains"
           " when its posterior is replaced by the prior N(0, 1) (Monte Carlo, zoo.metrics.prior_replacement_cost):"
           " the exact gain minus the KL. A latent whose exact gain is below its KL costs the ELBO more than it gives"
           " back.")


def _picture_rows(model: nn.Module, data: TensorData, out: Path, per_unit_kl: bool) -> list[tuple[str, str]]:
    """Draw every picture that applies; (file name, caption) for each. ``per_unit_kl``: the model has a per-unit
    KL, by which the traversals are ordered (:func:`_per_unit_kl`, asked once by the caller)."""
    from zoo import pictures as pic

    classes = model.num_classes if has(model, "conditional") else 0
    shape = latent_shape(model)
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
    if has(model, "generative"):
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
    unit = unit_name(shape)
    where = f" at grid position {pic.default_position(shape)}" if is_spatial(shape) else ""
    ranking = "most KL" if per_unit_kl else "largest code variance"
    groups = latent_groups(model)
    for group in groups if len(groups) > 1 else (None,):  # a hierarchical model: one picture per layer
        images, order = pic.traversals(model, x[:1], dims=min(len(group.units) if group else shape[0], 10),
                                       y=None if y is None else y[:1], data=sample,
                                       group=group.name if group else None)
        file = f"traversals-{group.name}.png" if group else "traversals.png"
        of_group = f" of group {group.name} ({group.description})" if group else ""
        grid(images, file, 9, f"traversals of one {unit}{of_group} per row{where} ({unit}s {order}, {ranking} first)")
    if shape == (2,):
        grid(pic.manifold(model, 20, y=0 if classes else None), "manifold.png", 20,
             "decoded 2-D latent grid (inverse normal CDF of evenly spaced quantiles)"
             + (" for class 0" if classes else ""))
    if labelled:
        pic.save_latent_scatter(model, data, out / "latent-scatter.png")
        shown.append(("latent-scatter.png", "encoded test codes coloured by label"))
    return shown


def write_report(model: nn.Module, data: TensorData, out: str | Path, *, title: str, dataset: str | None = None,
                 metrics: dict[str, Any] | None = None, nll_samples: int = 1000) -> Path:
    """Evaluate ``model`` on ``data`` (unless ``metrics`` are given) and write ``out/report.md`` with its
    pictures; returns the report's path."""
    from zoo.cards import metric_names, table_cell
    from zoo.evaluation import evaluate, skipped
    from zoo.metrics import reconstruction_gain
    from zoo.pictures import save_latent_bars

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    # Per-unit KL and "replace a unit by its prior mean 0" need a N(0, I) prior with a per-unit KL; a mixture
    # prior or a flow posterior is read like a deterministic code (its mean over the data).
    variational = _per_unit_kl(model, data)
    if metrics is None:
        metrics = evaluate(model, data, nll_samples=nll_samples, dataset=dataset)
    pictures = _picture_rows(model, data, out, variational)
    unit = unit_name(latent_shape(model))
    gain = (reconstruction_gain(model, data, replace_with="prior" if variational else "marginal")
            if has(model, "has_likelihood") else None)
    if variational and gain is not None:
        save_latent_bars(gain["kl_per_latent"], out / "latent-bars.png", gain_per_latent=gain["gain"],
                         title=f"{title}: per-{unit} KL and reconstruction gain")
        pictures.append(("latent-bars.png", f"per-{unit} KL and reconstruction gain (flagged: gain below KL)"))
    names = metric_names(model)
    rows = "\n".join(f"| `{k}` | {table_cell(names.get(k, ''))} | {v:.4f} |" if isinstance(v, float) else
                     f"| `{k}` | {table_cell(names.get(k, ''))} | {v} |" for k, v in metrics.items())
    notes = "\n".join(f"- {line}" for line in skipped(model, dataset))
    figures = "\n\n".join(f"### {caption}\n\n![{caption}]({file})" for file, caption in pictures)
    text = f"""# {title}

Variant `{model.variant_name}`, latent shape {latent_shape(model)}, evaluated on {dataset or "the given data"}
({len(data)} examples).

## Metrics

| metric | what it is | value |
| --- | --- | --- |
{rows}

{notes or "Every measurement applies to this model."}

## Per {unit}

{_unit_section(model, data, gain, variational, unit)}

## Pictures

{figures}
"""
    path = out / "report.md"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def _unit_section(model: nn.Module, data: TensorData, gain: dict[str, Any] | None, variational: bool,
                  unit: str) -> str:
    """The per-unit table (KL, gain, exact gain, activity for variational models; the gain for others) and how to
    read it."""
    from zoo.metrics import active_units

    spatial = is_spatial(latent_shape(model))
    per = (f" A unit is a channel of the {'x'.join(map(str, latent_shape(model)))} latent: its KL is summed and its "
           f"variance averaged over the grid positions, and the gain replaces the whole channel.") if spatial else ""
    if isinstance(posterior_of(model, data.x[:1].to(next(model.parameters()).device), _labels(data, 1)),
                  QuantizedCode):
        per += (" The latent is discrete (a quantised code): the gain, the interpolations and the traversals "
                "decode codes between the codebook's vectors, which the encoder never outputs.")
    if gain is None:
        return f"No reconstruction gain: the variant does not declare `has_likelihood`.{per}"
    groups = latent_groups(model)
    names = [f"{u} ({g.name})" if len(groups) > 1 else str(u) for g in groups for u in g.units]
    kept = "its prior mean (0)" if variational else "its mean over the data"
    what = (f"Reconstruction gain: the reconstruction NLL of the decoded {'posterior mean' if variational else 'code'} "
            f"with the {unit} replaced by {kept}, minus the NLL with it kept (per example; nats for a Bernoulli "
            f"decoder).{KL_NOTE if variational else ''}{per}")
    if variational:
        variance = active_units(model, data)["mean_variance"]
        exact = exact_unit_cost(model, data)
        rows = "\n".join(f"| {names[i]} | {kl:.3f} | {g:.3f} | {'yes' if i in gain['below_kl'] else ''} | {e:.3f} | "
                         f"{'yes' if i in exact['costs_more'] else ''} | {var:.4f} |"
                         for i, (kl, g, e, var) in enumerate(zip(gain["kl_per_latent"], gain["gain"], exact["gain"],
                                                                  variance, strict=True)))
        table = (f"| {unit} | KL (nats) | reconstruction gain (nats) | gain < KL | exact gain "
                 f"({EXACT_SAMPLES} draws, {exact['examples']} examples) | exact gain < KL | "
                 "Var_x E[z] (active > 0.01) |\n"
                 + "| --- " * 7 + "|\n" + rows)
    else:
        table = (f"| {unit} | reconstruction gain (code -> its data mean) |\n| --- | --- |\n"
                 + "\n".join(f"| {names[i]} | {g:.3f} |" for i, g in enumerate(gain["gain"])))
    return f"{what}\n\n{table}"


def exact_unit_cost(model: nn.Module, data: TensorData) -> dict[str, Any]:
    """:func:`zoo.metrics.prior_replacement_cost` with the report's draws, on at most ``EXACT_EXAMPLES`` examples
    evenly spaced over ``data`` (``examples`` says how many)."""
    from zoo.metrics import prior_replacement_cost

    keep = torch.linspace(0, len(data) - 1, min(len(data), EXACT_EXAMPLES)).round().long()
    subset = TensorData(data.x[keep], None if data.y is None else data.y[keep])
    return {**prior_replacement_cost(model, subset, num_samples=EXACT_SAMPLES), "examples": len(subset)}


def _per_unit_kl(model: nn.Module, data: TensorData) -> bool:
    """Whether ``model`` is variational with a closed-form KL per latent unit (:func:`zoo.contract.latent_kl`)."""
    if not has(model, "variational"):
        return False
    device = next(model.parameters()).device
    labels = _labels(data, 1)
    return has_unit_kl(model, data.x[:1].to(device), None if labels is None else labels.to(device))


def _labels(data: TensorData, n: int) -> torch.Tensor | None:
    """The first ``n`` labels of ``data`` (None when unlabelled); :func:`posterior_of` passes them to conditional
    models only."""
    return None if data.y is None else data.y[:n]
