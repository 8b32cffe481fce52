"""Disentanglement metrics from known generative factors: beta-VAE score, FactorVAE score and MIG.

Each metric follows disentanglement_lib's protocol (Locatello et al. 2019,
``config/unsupervised_study_v1/metric_configs``): the representation is the posterior MEAN, factors
are sampled uniformly and independently, and the sample counts default to the published ones.

=================  ======================  =======  ========================================================
metric             parameter               default  meaning
=================  ======================  =======  ========================================================
beta-VAE score     ``num_train``           10,000   training points (one point = one fixed factor)
(Higgins 2017)     ``num_eval``            5,000    evaluation points
                   ``batch_size``          64       pairs averaged into one point
FactorVAE score    ``num_variance``        10,000   random points for each latent's global variance
(Kim & Mnih 2018)  ``num_train``           10,000   training votes
                   ``num_eval``            5,000    evaluation votes
                   ``batch_size``          64       observations sharing the fixed factor, per vote
                   ``min_std``             0.05     latents whose global std is below it are pruned
MIG                ``num_points``          10,000   points the mutual information is estimated from
(Chen 2018)        ``num_bins``            20       equal-width histogram bins per latent
                   ``factors``             all      factors averaged over (``CHEN_MIG_FACTORS``: no shape)
=================  ======================  =======  ========================================================

:func:`disentanglement_scores` runs all three; ``quick=True`` uses a tenth of every count (any
``fraction`` can be given; the batch sizes stay 64, as they define the statistic) and the counts
used are recorded in the result.

Where the port departs from disentanglement_lib, on purpose:

- Random numbers come from one seeded ``torch.Generator`` per metric, drawn in fixed-size groups,
  so numbers are reproducible for a seed but not bit-identical to disentanglement_lib's streams.
- The beta-VAE classifier is scikit-learn's current default ``LogisticRegression`` (lbfgs,
  multinomial) with ``max_iter`` raised so it converges; disentanglement_lib ran the default of its
  time (liblinear, one-vs-rest).
- FactorVAE pruning is disentanglement_lib's rule with its study's threshold: a latent is active
  when the standard deviation of its mean over ``num_variance`` points is at least 0.05 (variance
  at least 0.0025), and a constant latent is never active, whatever the threshold (it would give
  0/0). Votes count over active latents only, and ``num_active_dims`` is their number
  (disentanglement_lib reports the length of the mask, i.e. all latents).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from zoo.contract import posterior_of
from zoo.dsprites import FACTOR_NAMES, factor_ranges, render

#: Observations -> codes (n, D): the representation a metric scores.
Representation = Callable[[Tensor], Tensor]

#: The factors Chen et al. (2018) average MIG over on dSprites: their code leaves shape out.
CHEN_MIG_FACTORS = ("scale", "orientation", "pos_x", "pos_y")

#: Observations rendered and represented at a time (bounds memory; about 16 MB of dSprites images).
_CHUNK = 1024
#: FactorVAE votes drawn per group (each group is ``_VOTES_PER_GROUP * batch_size`` observations).
_VOTES_PER_GROUP = 16
#: Enough lbfgs iterations for the beta-VAE classifier to converge on unscaled features.
_LOGISTIC_MAX_ITER = 5000
#: The fraction of the protocol's sample counts ``quick=True`` uses.
_QUICK_FRACTION = 0.1


class FactorData(Protocol):
    """A ground-truth data set: independent discrete factors and the observation each combination gives."""

    factor_sizes: tuple[int, ...]
    factor_names: tuple[str, ...]

    def sample_factors(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, F) int64 factor indices, each factor uniform and independent of the others."""
        ...

    def observations(self, factors: Tensor) -> Tensor:
        """The inputs of the representation for factor indices (n, F)."""
        ...


class DSpritesFactors:
    """dSprites' factors (shape, scale, orientation, pos_x, pos_y) and their rendered images (n, 1, size, size).

    ``fixed`` holds some factors at one index (``{"shape": 0, "orientation": 0}``: squares that do not
    turn) and ``ranges`` keeps a factor to a band of its grid indices (``{"pos_x": (12, 19)}``: eight
    positions, whose indices the metrics see as 0 to 7; :func:`zoo.dsprites.factor_ranges`); the metrics
    then see only the factors left free, as a data set with fewer factors. ``size`` renders smaller images
    of the same grid (:func:`zoo.dsprites.render`).
    """

    def __init__(self, fixed: Mapping[str, int] | None = None, size: int = 64,
                 ranges: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.bands = factor_ranges(fixed, ranges)
        self.size = size
        self._free = [i for i, (low, high) in enumerate(self.bands) if high > low]
        self.factor_names: tuple[str, ...] = tuple(FACTOR_NAMES[i] for i in self._free)
        self.factor_sizes: tuple[int, ...] = tuple(self.bands[i][1] - self.bands[i][0] + 1 for i in self._free)

    def sample_factors(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.stack([torch.randint(size, (n,), generator=generator) for size in self.factor_sizes], dim=1)

    def observations(self, factors: Tensor) -> Tensor:
        full = torch.tensor([low for low, _ in self.bands]).repeat(len(factors), 1)
        full[:, self._free] += factors
        return render(full, self.size)


def posterior_mean(model: nn.Module, device: torch.device | str | None = None, batch_size: int = 512) -> Representation:
    """The representation ``x -> mode of q(z|x)`` of ``model``, flattened to (N, D): the posterior mean of a
    Gaussian (as in disentanglement_lib), a deterministic encoder's code, a VQ model's quantised code.

    The model is put in eval mode (and moved to
    ``device`` when one is given); inputs are encoded ``batch_size`` at a time without autograd, and
    codes come back as float32 on the CPU. Conditional models need labels and are not supported.
    """
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    else:
        device = torch.device(device)
        model.to(device)

    @torch.no_grad()
    def represent(x: Tensor) -> Tensor:
        codes = []
        for batch in x.split(batch_size):
            codes.append(posterior_of(model, batch.to(device)).mode().flatten(1).float().cpu())
        return torch.cat(codes)

    return represent


def _codes(data: FactorData, represent: Representation, factors: Tensor) -> np.ndarray:
    """Codes (n, D) as float64 of the observations of ``factors``, ``_CHUNK`` rows at a time."""
    out = []
    with torch.no_grad():
        for chunk in factors.split(_CHUNK):
            out.append(represent(data.observations(chunk)).detach().cpu().double().numpy())
    return np.concatenate(out)


def _beta_vae_points(data: FactorData, represent: Representation, num_points: int, batch_size: int,
                     generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` features mean |z1 - z2| over ``batch_size`` pairs sharing one factor, and that factor."""
    num_factors = len(data.factor_sizes)
    per_group = max(1, _CHUNK // (2 * batch_size))
    features, labels = [], []
    for start in range(0, num_points, per_group):
        n = min(per_group, num_points - start)
        fixed = torch.randint(num_factors, (n,), generator=generator)
        first = data.sample_factors(n * batch_size, generator)
        second = data.sample_factors(n * batch_size, generator)
        rows = torch.arange(n * batch_size)
        columns = fixed.repeat_interleave(batch_size)
        second[rows, columns] = first[rows, columns]
        codes = _codes(data, represent, torch.cat([first, second]))
        difference = np.abs(codes[:n * batch_size] - codes[n * batch_size:]).reshape(n, batch_size, -1)
        features.append(difference.mean(axis=1))
        labels.append(fixed.numpy())
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(data: FactorData, represent: Representation, *, num_train: int = 10_000, num_eval: int = 5_000,
                   batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """beta-VAE score (Higgins et al. 2017): how well a linear classifier tells which factor was held fixed.

    A point: choose a factor uniformly, draw ``batch_size`` pairs of observations that share its value
    (all other factors independent), and average |z1 - z2| over the pairs. A logistic regression is
    fit on ``num_train`` points and scored on ``num_eval`` fresh ones. Chance is 1 / number of
    factors. Returns ``eval_accuracy`` (the score), ``train_accuracy`` and the counts used.
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn is imported only when scoring

    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = _beta_vae_points(data, represent, num_train, batch_size, generator)
    eval_x, eval_y = _beta_vae_points(data, represent, num_eval, batch_size, generator)
    classifier = LogisticRegression(max_iter=_LOGISTIC_MAX_ITER, random_state=seed).fit(train_x, train_y)
    return {"eval_accuracy": float(classifier.score(eval_x, eval_y)),
            "train_accuracy": float(classifier.score(train_x, train_y)),
            "num_train": num_train, "num_eval": num_eval, "batch_size": batch_size, "seed": seed}


def _factor_vae_votes(data: FactorData, represent: Representation, num_votes: int, batch_size: int,
                      scale: np.ndarray, active: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Vote counts (F, number of active latents): fixed factor x active latent of least normalised variance."""
    num_factors = len(data.factor_sizes)
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    for start in range(0, num_votes, _VOTES_PER_GROUP):
        n = min(_VOTES_PER_GROUP, num_votes - start)
        fixed = torch.randint(num_factors, (n,), generator=generator)
        factors = data.sample_factors(n * batch_size, generator).view(n, batch_size, num_factors)
        groups = torch.arange(n)
        factors[groups, :, fixed] = factors[groups, 0, fixed].unsqueeze(1)
        codes = _codes(data, represent, factors.view(-1, num_factors)).reshape(n, batch_size, -1)
        local = codes[:, :, active].var(axis=1, ddof=1) / scale[active] ** 2
        np.add.at(votes, (fixed.numpy(), local.argmin(axis=1)), 1)
    return votes


def factor_vae_score(data: FactorData, represent: Representation, *, num_variance: int = 10_000,
                     num_train: int = 10_000, num_eval: int = 5_000, batch_size: int = 64, min_std: float = 0.05,
                     seed: int = 0) -> dict[str, Any]:
    """FactorVAE score (Kim & Mnih 2018): majority-vote accuracy of "fixed factor -> least-varying latent".

    Each latent is scaled by its standard deviation over ``num_variance`` random points; latents
    whose standard deviation is below ``min_std`` (collapsed to a constant) are pruned, as in
    disentanglement_lib. A vote fixes one factor (chosen uniformly) across ``batch_size``
    observations and takes the active latent with the smallest scaled variance. Each latent is
    assigned the factor it got most training votes from; the score is the fraction of ``num_eval``
    fresh votes that assignment gets right (chance: 1 / number of factors; 0 when no latent is
    active). Returns ``eval_accuracy`` (the score), ``train_accuracy``, ``num_active_dims``,
    ``active_dims`` (latent indices) and the counts used.
    """
    generator = torch.Generator().manual_seed(seed)
    codes = _codes(data, represent, data.sample_factors(num_variance, generator))
    variances = codes.var(axis=0, ddof=1)
    active = (np.sqrt(variances) >= min_std) & (codes.max(axis=0) > codes.min(axis=0))  # constant: 0/0
    result: dict[str, Any] = {"num_active_dims": int(active.sum()), "active_dims": np.flatnonzero(active).tolist(),
                              "num_variance": num_variance, "num_train": num_train, "num_eval": num_eval,
                              "batch_size": batch_size, "min_std": min_std, "seed": seed}
    if not active.any():
        return {"eval_accuracy": 0.0, "train_accuracy": 0.0, **result}
    scale = np.sqrt(variances)
    train_votes = _factor_vae_votes(data, represent, num_train, batch_size, scale, active, generator)
    eval_votes = _factor_vae_votes(data, represent, num_eval, batch_size, scale, active, generator)
    assigned = train_votes.argmax(axis=0)
    latents = np.arange(train_votes.shape[1])
    return {"eval_accuracy": float(eval_votes[assigned, latents].sum() / eval_votes.sum()),
            "train_accuracy": float(train_votes[assigned, latents].sum() / train_votes.sum()), **result}


def _factor_indices(data: FactorData, factors: Sequence[str | int] | None) -> list[int]:
    """Factor names or indices -> indices (all factors for None); ValueError for unknown ones."""
    if factors is None:
        return list(range(len(data.factor_sizes)))
    names = list(data.factor_names)
    indices = [names.index(f) if f in names else f for f in factors]
    if not indices or any(isinstance(i, str) or not 0 <= i < len(names) for i in indices):
        raise ValueError(f"factors must be a non-empty subset of {data.factor_names} (names or indices), "
                         f"got {factors!r}")
    return [int(i) for i in indices]


def _histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each latent's values -> bin numbers 1..num_bins of ``num_bins`` equal-width bins over its range."""
    return np.stack([np.digitize(column, np.histogram(column, num_bins)[1][:-1]) for column in codes.T], axis=1)


def mig(data: FactorData, represent: Representation, *, num_points: int = 10_000, num_bins: int = 20,
        factors: Sequence[str | int] | None = None, seed: int = 0) -> dict[str, Any]:
    """Mutual Information Gap (Chen et al. 2018), disentanglement_lib's discrete estimator.

    Each latent's mean over ``num_points`` random points is cut into ``num_bins`` equal-width bins;
    the discrete mutual information I(z_j; v_k) with every factor is divided by the factor's entropy
    H(v_k), and a factor's gap is the largest normalised MI minus the second largest (over latents).
    MIG is the mean gap over ``factors``: by default all of the data's factors, as in
    disentanglement_lib; pass ``factors=CHEN_MIG_FACTORS`` for Chen et al.'s dSprites choice (no
    shape). A latent that copies a factor twice scores a gap of 0 for it.

    With 20 bins a perfect code of a factor with at most 21 values keeps every value apart (gap
    near 1), but one with more values (orientation: 40, positions: 32) shares bins, so even a
    perfect code scores H(binned v) / H(v) < 1 on it.

    Returns ``mig``, ``per_factor_gap`` (factor name -> gap), ``normalized_mutual_info`` (latents x
    factors, as nested lists), the ``factors`` used and the counts.
    """
    from sklearn.metrics import mutual_info_score  # scikit-learn is imported only when scoring

    indices = _factor_indices(data, factors)
    generator = torch.Generator().manual_seed(seed)
    sampled = data.sample_factors(num_points, generator)
    bins = _histogram_discretize(_codes(data, represent, sampled), num_bins)
    values = sampled.numpy()[:, indices]
    entropy = np.array([mutual_info_score(v, v) for v in values.T])
    if (entropy == 0).any():
        constant = [data.factor_names[i] for i, h in zip(indices, entropy, strict=True) if h == 0]
        raise ValueError(f"factor(s) {constant} took a single value in the sample; leave them out with factors=")
    info = np.array([[mutual_info_score(v, b) for v in values.T] for b in bins.T]) / entropy
    top = -np.sort(-np.vstack([info, np.zeros((1, len(indices)))]), axis=0)  # a zero row: one latent has gap = MI
    gaps = top[0] - top[1]
    names = [data.factor_names[i] for i in indices]
    return {"mig": float(gaps.mean()), "per_factor_gap": dict(zip(names, gaps.tolist(), strict=True)),
            "normalized_mutual_info": info.tolist(), "factors": names,
            "num_points": num_points, "num_bins": num_bins, "seed": seed}


def _scaled(count: int, fraction: float) -> int:
    return max(2, round(count * fraction))


def disentanglement_scores(model_or_represent: nn.Module | Representation, data: FactorData | None = None, *,
                           quick: bool = False, fraction: float = 1.0, seed: int = 0,
                           device: torch.device | str | None = None) -> dict[str, Any]:
    """All three metrics of a model (its posterior mean, see :func:`posterior_mean`) or a representation.

    ``data`` defaults to dSprites (:class:`DSpritesFactors`). Sample counts are the protocol's
    defaults times ``fraction`` (at least 2 each); ``quick=True`` is ``fraction=0.1``. Returns
    ``scores`` (beta_vae, factor_vae, mig: the headline numbers), each metric's full result under
    ``beta_vae``, ``factor_vae`` and ``mig`` (with the counts it used), and ``fraction`` and ``seed``.
    """
    if quick and fraction != 1.0:
        raise ValueError("pass either quick=True or a fraction, not both")
    fraction = _QUICK_FRACTION if quick else fraction
    if not 0 < fraction <= 1:  # also rejects NaN
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    data = DSpritesFactors() if data is None else data
    if isinstance(model_or_represent, nn.Module):
        represent = posterior_mean(model_or_represent, device)
    else:
        represent = model_or_represent
    beta = beta_vae_score(data, represent, num_train=_scaled(10_000, fraction), num_eval=_scaled(5_000, fraction),
                          seed=seed)
    factor = factor_vae_score(data, represent, num_variance=_scaled(10_000, fraction),
                              num_train=_scaled(10_000, fraction), num_eval=_scaled(5_000, fraction), seed=seed)
    gap = mig(data, represent, num_points=_scaled(10_000, fraction), seed=seed)
    return {"scores": {"beta_vae": beta["eval_accuracy"], "factor_vae": factor["eval_accuracy"], "mig": gap["mig"]},
            "beta_vae": beta, "factor_vae": factor, "mig": gap, "fraction": fraction, "seed": seed}


#: Sample counts for model cards. MIG and the FactorVAE variances use the protocol's 10,000 points
#: (cheap: one image each); the vote-based parts are cut (the protocol's 10,000 / 5,000 points of 64
#: or 128 images each encode 1.9 million images, half an hour on a 2-core CPU), so a test can
#: recompute the card. The card names these counts.
CARD_COUNTS = {"mig_points": 10_000, "factor_vae_variance": 10_000, "factor_vae_train": 500, "factor_vae_eval": 250,
               "beta_vae_train": 250, "beta_vae_eval": 125}


def card_scores(model: nn.Module, seed: int = 0) -> dict[str, float]:
    """The three headline scores of a dSprites model with :data:`CARD_COUNTS` samples."""
    data, represent, n = DSpritesFactors(), posterior_mean(model), CARD_COUNTS
    return {
        "mig": mig(data, represent, num_points=n["mig_points"], seed=seed)["mig"],
        "factor_vae_score": factor_vae_score(data, represent, num_variance=n["factor_vae_variance"],
                                             num_train=n["factor_vae_train"], num_eval=n["factor_vae_eval"],
                                             seed=seed)["eval_accuracy"],
        "beta_vae_score": beta_vae_score(data, represent, num_train=n["beta_vae_train"], num_eval=n["beta_vae_eval"],
                                         seed=seed)["eval_accuracy"],
    }
