"""Which of InfoVAE's two weights leaves units unused: info-vae-mnist's recipe over alpha and lambda, rerunnable
(about 5 minutes):

    python -m zoo_model_cards.sweep_info_vae [--settings 0,1 0,10 0,100 0,1000 1,1000]

InfoVAE-MMD's loss is recon + (1 - alpha) KL + (alpha + lambda - 1) MMD^2; (alpha, lambda) = (0, 1) is the VAE. Each
setting trains the recipe (300 epochs, final weights) with that pair and reports, on the ``val`` rows (no test row
is touched), the negative ELBO (10 draws per digit), the KL, the active units and the importance-sampled NLL
(K = 100). Holding alpha = 0 and raising lambda raises the MMD weight with the KL's fixed; alpha = 1 drops the KL.
"""

from __future__ import annotations

import argparse
import json

from zoo_model_cards.make import train_recipe
from zoo_model_cards.recipes import RECIPES

from zoo.data import load_dataset
from zoo.metrics import active_units, elbo_terms, importance_sampled_nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["0,1", "0,10", "0,100", "0,1000", "1,1000"],
                        help="alpha,lambda pairs")
    args = parser.parse_args()
    recipe = RECIPES["info-vae-mnist"]
    val = load_dataset("mnist", "val")
    for setting in args.settings:
        alpha, info_lambda = (float(v) for v in setting.split(","))
        model, _, _, _ = train_recipe(recipe, progress=False, alpha=alpha, info_lambda=info_lambda)
        terms = elbo_terms(model, val)
        print(json.dumps({"alpha": alpha, "lambda": info_lambda, "val_neg_elbo": round(terms["neg_elbo"], 2),
                          "val_kl": round(terms["kl"], 2), "active_units": active_units(model, val)["active_units"],
                          "val_nll": round(importance_sampled_nll(model, val, num_samples=100)["nll"], 2)}),
              flush=True)


if __name__ == "__main__":
    main()
