"""The benchmark's MLP VAE workload trained by pythae's own pipeline, run inside pythae's environment.

``bench.py`` runs this with the Python of a separate environment that has pythae (``make
bench-pythae-env`` builds one in ``benchmarks/.pythae-venv``; pythae is not a dependency of the zoo).
It imports neither the zoo nor the benchmark, only numpy, torch and pythae:

    python pythae_side.py --data mnist.npz --epochs 6 --seed 0 --threads 2 --out result.json

The model is the benchmark's (784-512-256 ReLU, one linear layer to the mean and log-variance of 16
latents, decoder 16-256-512-784), built in the same order under the same seed as the hand-written
side, so all three start from the same weights (the script reports a checksum ``bench.py`` checks).
pythae's decoder must return probabilities for its "bce" loss, so it ends in a sigmoid. Training:
``TrainingPipeline`` with ``BaseTrainerConfig`` (Adam, lr 1e-3, batch 128, CPU); an epoch is timed
from one ``on_epoch_begin`` to the next (the last to ``on_train_end``), so it includes what the
trainer does between epochs (it keeps a deep copy of the best model). The test loss is the
negative ELBO under pythae's own loss, averaged over 10 noise draws after ``torch.manual_seed(test_seed)``,
as ``bench.py`` computes it for the other two sides.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback
from torch import nn

LATENT = 16


class Encoder(BaseEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                 nn.Linear(256, 2 * LATENT))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return ModelOutput(embedding=mu, log_covariance=logvar)


class Decoder(BaseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(LATENT, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
                                 nn.Linear(512, 784), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z).view(-1, 1, 28, 28))


class EpochMarks(TrainingCallback):
    """The wall-clock time at the start of every epoch and at the end of training."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_epoch_begin(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.marks.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help=".npz with float32 arrays train and test")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--test-seed", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with np.load(args.data, allow_pickle=False) as arrays:
        train, test = torch.from_numpy(arrays["train"]), torch.from_numpy(arrays["test"])

    torch.manual_seed(args.seed)
    encoder, decoder = Encoder(), Decoder()
    checksum = float(sum(p.detach().double().sum() for m in (encoder, decoder) for p in m.parameters()))
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=encoder, decoder=decoder)
    marks = EpochMarks()
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, num_epochs=args.epochs, learning_rate=1e-3,
                                   per_device_train_batch_size=128, optimizer_cls="Adam", no_cuda=True)
        TrainingPipeline(model=model, training_config=config)(train_data=train, callbacks=[marks])

    model.eval()
    torch.manual_seed(args.test_seed)
    with torch.no_grad():
        test_loss = float(torch.stack([model({"data": test}).loss for _ in range(10)]).mean())
    epoch_times = [b - a for a, b in zip(marks.marks[:-1], marks.marks[1:], strict=True)]
    args.out.write_text(json.dumps({"epoch_times": epoch_times, "test_neg_elbo": test_loss,
                                    "initial_weight_checksum": checksum, "torch": torch.__version__,
                                    "pythae": version("pythae")}))


if __name__ == "__main__":
    main()
