"""Model cards: README.md with Hub YAML front matter, the measured numbers and how to reproduce them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from zoo.losses import REDUCTION
from zoo.samplers import network_parameters


def table_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``q(z|x)`` would split the cell)."""
    return text.replace("|", "\\|")


def render_card(model: nn.Module, *, title: str, summary: str, dataset: str, command: str,
                metrics: dict[str, float], training: dict[str, Any], split: str = "test",
                base_model: str | None = None) -> str:
    """A model card for a trained model; ``metrics`` were measured on ``split`` of ``dataset``."""
    from huggingface_hub import ModelCardData

    from zoo.folder import zoo_version

    data = ModelCardData(library_name="ae-zoo", license="mit", base_model=base_model,
                         tags=["autoencoder", model.variant_name, "pytorch", "ae-zoo"],
                         datasets=[dataset] if dataset else None)
    n_params = network_parameters(model)
    rows = "\n".join(f"| {table_cell(name)} | {value:.4f} |" for name, value in metrics.items())
    settings = "\n".join(f"- `{k}`: {v}" for k, v in training.items())
    return f"""---
{data.to_yaml()}
---

# {title}

{summary}

- Variant: `{model.variant_name}` ({n_params:,} parameters); config in `config.json`.
- Loss convention: {REDUCTION} (terms summed over one example's dimensions, averaged over the batch).
- Made with ae-zoo {zoo_version()}.

## Training

Data: `{dataset}`. Settings:

{settings}

Command:

```
{command}
```

## Results ({split} split)

| metric | value |
| --- | --- |
{rows}

## Use

```python
import zoo
model = zoo.load("local-dir:PATH")  # or the checkpoint's name once published
```
"""


METRIC_NAMES = {
    "neg_elbo": "negative ELBO (nats; samples of z per example: 10, or as the eval command's --elbo-samples)",
    "reconstruction": "reconstruction term of the ELBO (nats)",
    "kl": "KL(q(z|x) || p(z)) (nats)",
    "nll": "NLL -log p(x) (nats, importance sampling from q(z|x), K = 1000 samples per example)",
    "nll_stderr": "standard error of the NLL over test examples",
    "active_units": "active units (Var_x E_q[z_i] > 0.01)",
    "recon_mse": "squared error of the deterministic reconstruction, per example",
    "recon_bce": "binary cross-entropy of the deterministic reconstruction, per example (nats)",
    "fcd": "Frechet classifier distance of 5,000 samples to the test images (features of zoo's CNN classifier, "
           "trained with 2-pixel shifts; not the Inception FID)",
    "fcd_mlp": "Frechet classifier distance of the same samples in the features of zoo's position-sensitive MLP "
               "classifier (trained without shifts)",
    "sharpness": "sharpness of 5,000 samples (mean variance of the Laplacian)",
    "sharpness_real": "sharpness of the test images, for comparison",
    "centre_spread": "spread of the samples' centres of mass (pixels; standard deviation per axis, mean of the two "
                     "axes)",
    "centre_spread_real": "spread of the test images' centres of mass, for comparison",
    "confidence": "CNN classifier's mean top-class probability on 5,000 samples",
    "confidence_mlp": "MLP classifier's mean top-class probability on the same samples",
    "conditional_accuracy": "CNN classifier's accuracy on the requested label, 500 samples per class",
    "conditional_accuracy_mlp": "MLP classifier's accuracy on the requested label, the same samples",
    "mig": "MIG, all 5 factors, 10,000 points (as the protocol), posterior means, 20 bins",
    "factor_vae_score": "FactorVAE score, 10,000 points for the variances, 500 train / 250 eval votes of 64 "
                        "(protocol: 10,000 / 5,000)",
    "beta_vae_score": "beta-VAE score, 250 train / 125 eval points of 64 pairs (protocol: 10,000 / 5,000)",
}


#: What the likelihoods of a conditional model are: given the true label, and with the label summed out.
CONDITIONAL_NAMES = {
    "nll": "conditional NLL -log p(x|y) at the true label (nats, importance sampling from q(z|x, y), K = 1000 "
           "samples per example)",
    "nll_stderr": "standard error of the conditional NLL over test examples",
    "nll_marginal": "marginal NLL -log p(x) = -log (1/C) sum_y p(x|y), uniform p(y) (nats; each p(x|y) "
                    "importance sampled with K / C = 100 samples, 1000 in all)",
    "neg_elbo": "negative ELBO of log p(x|y) at the true label (nats; samples of z per example: 10, or as the eval "
                "command's --elbo-samples)",
}


def group_metric_names(model: nn.Module) -> dict[str, str]:
    """Descriptions of the per-group KL and active units of a model of several latent groups (none otherwise)."""
    from zoo.contract import latent_groups

    groups = latent_groups(model)
    if len(groups) == 1:
        return {}
    names = {}
    for group in groups:
        what = f"latent group {group.name} ({group.description})" if group.description else f"latent group {group.name}"
        names[f"kl_{group.name}"] = f"KL of {what} (nats)"
        names[f"active_units_{group.name}"] = f"active units of {what} (Var_x E_q[z_i] > 0.01)"
    return names


def metric_names(model: nn.Module) -> dict[str, str]:
    """Descriptions of every metric a model's evaluation may report: the zoo's and its variant's own."""
    from zoo.contract import variant_of

    variant = variant_of(model)
    names = {**METRIC_NAMES, **group_metric_names(model), **variant.metric_names}
    if variant.conditional:
        names.update(CONDITIONAL_NAMES)
    for name in getattr(model, "samplers", {}):
        key = sampler_metric_prefix(name)
        names[f"{key}_fcd"] = (f"Frechet classifier distance of 5,000 samples through the {name!r} ex-post sampler "
                               f"(model.sample(n, sampler={name!r})) to the test images (CNN classifier)")
        names[f"{key}_confidence"] = f"the CNN classifier's mean top-class probability on those {name!r} samples"
        names[f"{key}_fcd_mlp"] = f"Frechet classifier distance of those {name!r} samples (MLP classifier)"
        names[f"{key}_code_nll"] = (f"-log density of the test images' codes under the {name!r} sampler (nats per "
                                    f"code; how well it fits codes it was not fitted to)")
    return names


def sampler_metric_prefix(name: str) -> str:
    """The prefix of a fitted sampler's metrics on cards: ``sampler_`` and its name in snake case."""
    return "sampler_" + name.replace("-", "_")


def checkpoint_card(model: nn.Module, *, name: str, summary: str, dataset: str, dataset_label: str,
                    metrics: dict[str, float], training: dict[str, Any], make_command: str, eval_command: str,
                    notes: str = "", limits: str = "") -> str:
    """The card of a bundled checkpoint: Hub front matter with a model-index holding ``metrics``."""
    from huggingface_hub import EvalResult, ModelCardData

    from zoo.evaluation import CARD_TOLERANCE
    from zoo.folder import samplers_section, zoo_version

    names = metric_names(model)
    results = [EvalResult(task_type="image-generation", dataset_type=dataset, dataset_name=dataset_label,
                          dataset_split="test", metric_type=key, metric_value=round(float(value), 4),
                          metric_name=names.get(key, key))
               for key, value in metrics.items()]
    data = ModelCardData(library_name="ae-zoo", license="mit", model_name=name, datasets=[dataset],
                         tags=["autoencoder", model.variant_name, "pytorch", "ae-zoo"], eval_results=results)
    n_params = network_parameters(model)
    rows = "\n".join(f"| {table_cell(names.get(k, k))} | {v:.4f} |" if isinstance(v, float) else
                     f"| {table_cell(names.get(k, k))} | {v} |" for k, v in metrics.items())
    settings = "\n".join(f"- {k}: {v}" for k, v in training.items())
    config = "\n".join(f"- `{k}`: {v}" for k, v in vars(model.config).items())
    return f"""---
{data.to_yaml()}
---

# {name}

{summary}

```python
import zoo
model = zoo.load("{name}")   # bundled with ae-zoo: works offline
```

## Model

Variant `{model.variant_name}`, {n_params:,} parameters. Config (also in `config.json`):

{config}

Loss convention: {REDUCTION} (every term summed over one example's dimensions, averaged over the batch).

## Training

{settings}
{samplers_section(model)}
Made with ae-zoo {zoo_version()} by

```
{make_command}
```

## Results on the test split ({dataset_label})

| metric | value |
| --- | --- |
{rows}

Reproduce these numbers with `{eval_command}` (seeded; a test checks the card against a fresh
evaluation within {CARD_TOLERANCE:.0%}).
{notes}
## Limits

{limits}
"""


def front_matter(card_path: str | Path) -> dict[str, Any]:
    """The YAML front matter of a model card (what ``huggingface_hub.metadata_load`` returns), read with
    PyYAML alone: plugin discovery reads every bundled card, and importing huggingface_hub's card
    module would cost a third of a second."""
    import yaml

    text = Path(card_path).read_text()
    if not text.startswith("---"):
        return {}
    block = text.split("\n---", 1)[0][3:]
    return yaml.safe_load(block) or {}


def card_metrics(card_path: Any) -> dict[str, float]:
    """The metrics stored in a card's model-index, by metric type."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(card_path)
    return {r.metric_type: r.metric_value for r in (card.data.eval_results or [])}
