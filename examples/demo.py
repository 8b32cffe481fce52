"""`make demo`: load the pretrained conditional VAE and draw every digit.

Loads the bundled `cvae-mnist` checkpoint (no training, no network) and writes a PNG with one row
per digit 0-9, each row eight samples of the requested class. Pass `--train` for the original demo
instead: train a small VAE on the bundled MNIST digits for about a minute and print its test ELBO.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zoo
from zoo.pictures import class_rows, save_grid


def pretrained_demo(out: Path) -> None:
    model = zoo.load("cvae-mnist")
    path = save_grid(class_rows(model, num_classes=10, per_class=8, seed=0), out / "cvae-mnist-digits.png", nrow=8)
    print(f"loaded cvae-mnist ({model.pretrained_info['source']}: {model.pretrained_info['path']})")
    print(f"wrote {path.resolve()}: row k holds 8 samples of digit k (k = 0..9)")


def training_demo(out: Path, epochs: int) -> None:
    import torch

    from zoo.data import load_dataset
    from zoo.pictures import prior_samples, reconstruction_rows
    from zoo.training import evaluate_loss

    model = zoo.create("vae", latent_dim=16, hidden_dims=(512, 256))
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    zoo.train(model, train, epochs=epochs, batch_size=128, lr=1e-3, seed=0)
    metrics = evaluate_loss(zoo.get_variant("vae"), model, test.to(model.device))
    picture = torch.cat([reconstruction_rows(model, test.x[::100][:8]), prior_samples(model, 16)])
    path = save_grid(picture, out / "demo.png", nrow=8)
    print(f"wrote {path.resolve()}: row 1 test digits, row 2 their reconstructions, rows 3-4 prior samples")
    print(f"test ELBO: {-metrics['neg_elbo']:.2f} nats per digit "
          f"(reconstruction {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f}; 1,000 held-out digits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="train a VAE for about a minute instead")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    if args.train:
        training_demo(args.out, args.epochs)
    else:
        pretrained_demo(args.out)


if __name__ == "__main__":
    main()
