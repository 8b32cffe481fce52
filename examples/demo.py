"""`make demo`: train a small VAE on the bundled MNIST digits, draw its pictures, print its test ELBO.

Trains an MLP VAE (784-512-256-16) for about a minute on the 4,000 training digits (per-class
split), then writes a PNG with test digits, their reconstructions and prior samples, and prints the
test ELBO measured on the 1,000 held-out digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import zoo
from zoo.data import load_dataset
from zoo.pictures import prior_samples, reconstruction_rows, save_grid
from zoo.training import evaluate_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    model = zoo.create("vae", latent_dim=16, hidden_dims=(512, 256))
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    zoo.train(model, train, epochs=args.epochs, batch_size=128, lr=1e-3, seed=0)

    metrics = evaluate_loss(zoo.get_variant("vae"), model, test.to(model.device))
    picture = torch.cat([reconstruction_rows(model, test.x[::100][:8]), prior_samples(model, 16)])
    path = save_grid(picture, args.out / "demo.png", nrow=8)
    model.save_pretrained(args.out / "demo-vae")
    print(f"wrote {path}: row 1 test digits, row 2 their reconstructions, rows 3-4 prior samples")
    print(f"wrote {args.out / 'demo-vae'}/ (load it with zoo.load('local-dir:{args.out / 'demo-vae'}'))")
    print(f"test ELBO: {-metrics['neg_elbo']:.2f} nats per digit "
          f"(reconstruction {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f}; 1,000 held-out digits)")


if __name__ == "__main__":
    main()
