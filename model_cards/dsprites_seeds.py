"""The dSprites checkpoints' recipes trained again with other seeds, so the families page shows the spread over
training runs and not only over test images (Locatello et al. 2019: the seed matters as much as the method).

    python -m zoo_model_cards.dsprites_seeds                      # seeds 1 and 2 of every dSprites recipe
    python -m zoo_model_cards.dsprites_seeds --seeds 3 --only beta-tcvae-dsprites

Each run is ``python -m zoo_model_cards.make NAME``'s training with ``seed`` replaced, evaluated as the card is
(:func:`zoo.evaluate` on the 1,000 test images, the card's reduced sample counts for the scores); seed 0 is the
bundled checkpoint, whose numbers the families page takes from its card. The runs' numbers are merged into
``docs/families-dsprites-seeds.json``, which ``python -m zoo_model_cards.families`` reads. About 4 minutes per run
on a 2-core CPU (the default, two seeds of four recipes, 34 minutes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from zoo_model_cards.make import train_recipe
from zoo_model_cards.recipes import RECIPES

from zoo.data import load_dataset
from zoo.evaluation import evaluate
from zoo.folder import atomic_write

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "families-dsprites-seeds.json"
#: The card metrics kept per run.
KEPT = ("reconstruction", "kl", "active_units", "mig", "factor_vae_score", "beta_vae_score")


def run(name: str, seed: int) -> dict[str, Any]:
    """The numbers of the recipe ``name`` trained with ``seed``, as its card reports them, and the training time."""
    recipe = RECIPES[name]
    model, result, seconds, _ = train_recipe(recipe, progress=False, seed=seed)
    metrics = evaluate(model, load_dataset(recipe.dataset, "test"), nll_samples=recipe.nll_samples,
                       dataset=recipe.dataset, elbo_samples=recipe.elbo_samples, seed=0)
    return {**{key: metrics[key] for key in KEPT}, "steps": result.steps, "seconds": round(seconds, 1)}


def load_results(path: Path = RESULTS) -> dict[str, dict[str, dict[str, Any]]]:
    """{checkpoint: {seed (str): numbers}} of the runs so far (empty when there are none)."""
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="dSprites checkpoints (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    known = [name for name, recipe in RECIPES.items() if recipe.dataset == "dsprites"]
    names = args.only or known
    unknown = [name for name in names if name not in known]
    if unknown or 0 in args.seeds:
        parser.error(f"--only takes dSprites recipes ({', '.join(known)}) and --seeds other than 0 (the bundled "
                     f"checkpoint); got {unknown or ''} {args.seeds}")
    for name in names:
        for seed in args.seeds:
            numbers = run(name, seed)
            results = load_results(args.out)  # merged one run at a time: a killed run keeps the ones before it
            results.setdefault(name, {})[str(seed)] = numbers
            text = json.dumps(results, indent=2, sort_keys=True) + "\n"
            atomic_write(args.out, lambda tmp, text=text: tmp.write_text(text))
            print(name, seed, json.dumps(numbers), flush=True)


if __name__ == "__main__":
    main()
