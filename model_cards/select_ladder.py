"""How ladder-vae-mnist's KL warm-up was chosen, rerunnable (about 4 minutes):

    python -m zoo_model_cards.select_ladder [--warmup 0 500 1000 1500 3000 6000]

For each warm-up length: train the ladder-vae-mnist recipe with it on the ``fit`` rows with early stopping on
``val``, then report the validation negative ELBO (10 draws per digit) and the active units of each layer. The
recipe takes the warm-up with the best validation ELBO; no test row is touched. Without warm-up the model keeps few
units active (Sonderby et al.'s reason for it); a long warm-up is still running when early stopping ends the run,
its validation ELBO measured on a model trained mostly on a down-weighted KL.
"""

from __future__ import annotations

import argparse
import json

from zoo_model_cards.make import train_recipe
from zoo_model_cards.recipes import RECIPES

from zoo.data import load_dataset
from zoo.metrics import active_units, elbo_terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, nargs="+", default=[0, 500, 1000, 1500, 3000, 6000])
    args = parser.parse_args()
    recipe = RECIPES["ladder-vae-mnist"]
    val = load_dataset("mnist", "val")
    rows = []
    for steps in args.warmup:
        model, result, _, _ = train_recipe(recipe, progress=False, warmup_steps=steps)
        terms = elbo_terms(model, val)
        groups = active_units(model, val)["groups"]
        rows.append({"warmup_steps": steps, "best_epoch": result.best_epoch, "val_neg_elbo": terms["neg_elbo"],
                     "val_kl_z1": terms["kl_z1"], "val_kl_z2": terms["kl_z2"],
                     "active_units": {name: group["active_units"] for name, group in groups.items()}})
        print(json.dumps(rows[-1]), flush=True)
    print(f"chosen: {min(rows, key=lambda r: r['val_neg_elbo'])}")


if __name__ == "__main__":
    main()
