"""One loaded model and every question the page asks of it, as plain functions (no Gradio).

:class:`Explorer` talks to the model only through the contract (:mod:`zoo.contract`) and the zoo's own
tools: reconstructions and posteriors from ``encode``/``decode``, the ELBO and the importance-sampled NLL
from :mod:`zoo.metrics`, interpolations, prior samples and the 2-D manifold from :mod:`zoo.pictures`.
What a model's variant does not declare is skipped with a one-line note (:meth:`Explorer.notes`).

The sliders move the informative latent units (a latent of a flat latent, a channel at the centre of the
grid of a spatial one): units whose mean KL over the test data (variational models with a N(0, I) prior and
a per-unit KL) or whose code variance over it (other models, a mixture prior or a flow posterior included)
exceeds ``INFORMATIVE``, the most informative first, at most ``MAX_SLIDERS``. The first kind's sliders are in
prior units; the other's span the codes' mean +- 3 standard deviations over the data.

Every public method runs in eval mode under ``torch.inference_mode()`` on the model's device and returns
images as uint8 arrays (:mod:`zoo.explore.images`); a bad request raises
:class:`~zoo.explore.checks.RequestError`.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from zoo import pictures
from zoo.contract import (
    decode_images,
    has,
    has_unit_kl,
    is_spatial,
    latent_kl,
    latent_shape,
    likelihood_nll,
    posterior_of,
    skip_note,
    unit_mean,
    unit_name,
    unit_sum,
)
from zoo.data import TensorData
from zoo.distributions import DiagonalGaussian
from zoo.explore import checks, images
from zoo.explore.checks import RequestError
from zoo.explore.plots import Scatter, posterior_chart

#: Most sliders the page shows, and the mean KL (nats) or code variance above which a unit counts as
#: informative (Burda et al.'s active-unit threshold, as :func:`zoo.metrics.active_units`).
MAX_SLIDERS, INFORMATIVE = 8, 0.01
#: A variational model's sliders span +- this many prior standard deviations (at least; wider when the
#: starting code lies further out); another model's, this many of its codes' standard deviations.
SLIDER_SPAN = 3.0
#: Importance samples of the page's NLL (the cards use 1,000: the page answers within a second instead),
#: and samples of z for the ELBO's reconstruction term.
NLL_SAMPLES, ELBO_SAMPLES = 100, 10
#: Samples that estimate a posterior's spread when it is not a diagonal Gaussian.
SPREAD_SAMPLES = 64
#: Test images encoded for slider ranges and order and for the scatter.
DATA_ROWS = 1000
#: Prior samples per request and per row; interpolation steps; manifold grid side and outermost quantile.
SAMPLES, SAMPLES_PER_ROW, INTERPOLATION_STEPS = 16, 8, 10
MANIFOLD_N, MANIFOLD_BOUND = 15, 0.05

F = TypeVar("F", bound=Callable[..., Any])


def _inference(method: F) -> F:
    """Run a method under ``torch.inference_mode()``: no autograd graph, no version counters."""
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return method(*args, **kwargs)
    return run  # type: ignore[return-value]


@dataclass(frozen=True)
class Slider:
    """One slider: the latent unit it moves, its caption and its range for the current starting code."""

    unit: int
    label: str
    low: float
    high: float


@dataclass
class Reading:
    """What the page shows for one input image."""

    input: np.ndarray           # the image as the model reads it
    reconstruction: np.ndarray  # decode of the posterior's mode (eval-mode forward pass)
    code: Tensor                # the posterior's mode (1, *latent_shape), the sliders' starting point
    chart: np.ndarray           # posterior per unit
    table: list[list[Any]]      # unit, mean, spread (, KL) per unit
    notes: list[str]            # what was adapted in the image


class Explorer:
    """A model in eval mode with its test data summarised for the page.

    ``data`` are test images (and labels) of the model's dataset, None when they are not known: then the
    sliders of a model without a prior, their order and the scatter are unavailable and :meth:`notes` says so.
    """

    def __init__(self, model: nn.Module, name: str, data: TensorData | None = None,
                 dataset: str | None = None) -> None:
        self.model = model.eval()
        self.name = name
        self.dataset = dataset
        self.shape = latent_shape(model)
        self.spatial = is_spatial(self.shape)
        self.position = pictures.default_position(self.shape) if self.spatial else ()
        self.variational = has(model, "variational")
        self.generative = has(model, "generative")
        self.num_classes = int(model.num_classes) if has(model, "conditional") else 0
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            self.input_shape = tuple(self._decode(torch.zeros(1, *self.shape, device=self.device), 0).shape[1:])
            # Sliders in prior units and per-unit KL need a N(0, I) prior with a per-unit KL (not a mixture
            # prior or a flow posterior): those models are explored like deterministic ones, by the data.
            self.unit_kl = self.variational and has_unit_kl(
                model, torch.zeros(1, *self.input_shape, device=self.device), self._labels(0))
            self.data_note = ""
            if data is not None and data.input_shape != self.input_shape:
                self.data_note = (f"The test data of {dataset or 'the data given'} are {data.input_shape} images "
                                  f"and the model reads {self.input_shape}: not used. ")
                data = None
            self.data = None if data is None else TensorData(data.x[:DATA_ROWS], None if data.y is None
                                                             else data.y[:DATA_ROWS])
            self._summarise()

    # -- what the data say about the latent space ---------------------------------------------------------------

    def _summarise(self) -> None:
        """Slider order and ranges, the data's background level and the scatter, from the test data."""
        from zoo.metrics import active_units

        units = self.shape[0]
        self.background = None if self.data is None else images.border_level(self.data.x)
        self.codes = self.scatter = None
        if self.data is None:
            score = torch.zeros(units)
            self.centre, self.scale = torch.zeros(units), torch.ones(units)
            self.sliders_by = "unit index (no test data to rank them)"
        else:
            self.codes = pictures._encode_all(self.model, self.data.x, self.data.y)[0]
            summary = active_units(self.model, self.data, threshold=INFORMATIVE)
            at = self.codes[(slice(None), slice(None), *self.position)]  # (N, units) at the sliders' position
            if self.unit_kl:
                score = torch.tensor(summary["kl_per_latent"])
                self.centre, self.scale = torch.zeros(units), torch.ones(units)
                self.sliders_by = "mean KL over the test data"
            else:
                score = torch.tensor(summary["mean_variance"])
                self.centre, self.scale = at.mean(0), at.std(0)
                self.sliders_by = "code variance over the test data"
            if self.shape != (2,):
                self.scatter = self._scatter()
        self.score = score
        order = torch.argsort(score, descending=True, stable=True).tolist()
        if self.data is not None:
            order = [u for u in order if score[u] > INFORMATIVE]
        self.units = order[:MAX_SLIDERS] if self.unit_kl or self.data is not None else []

    def _scatter(self) -> Scatter:
        points, explained = pictures._pca_2d(self.codes.flatten(1).double())
        what = "posterior means" if self.variational else "codes"
        dims = "x".join(map(str, self.shape))
        return Scatter(points, self.data.y, f"{len(points)} test {what} ({dims}), PCA to 2-D: click to decode",
                       (f"PC 1 ({explained[0]:.0%} of variance)", f"PC 2 ({explained[1]:.0%})"))

    def notes(self) -> list[str]:
        """One line per part of the page that does not apply to this model, or works differently, and why."""
        notes = []
        if not self.variational:
            notes.append(skip_note(self.model, "variational", "ELBO terms, importance-sampled NLL and KL per "
                                                               "latent"))
            if not has(self.model, "has_likelihood"):
                notes.append(skip_note(self.model, "has_likelihood", "reconstruction likelihood"))
        if not self.generative:
            notes.append(skip_note(self.model, "generative", "prior samples"))
        if self.spatial:
            notes.append(f"The latent is spatial ({'x'.join(map(str, self.shape))}): a unit is a channel; the "
                         f"posterior chart averages each channel over its {self.shape[1]}x{self.shape[2]} "
                         f"positions and the sliders move one channel at position {self.position}.")
        if self.data is None:
            notes.append(self.data_note + "No test data for this model (or its card names no dataset): no scatter" +
                         ("" if self.unit_kl else " and no sliders (their range comes from the data)") +
                         "; pass --data NAME.")
        elif not self.units:
            notes.append(f"No latent unit carries information (none above {INFORMATIVE} by "
                         f"{self.sliders_by}): no sliders.")
        if self.shape != (2,) and self.scatter is not None:
            notes.append(f"The latent has {int(np.prod(self.shape))} dimensions: the map is a PCA scatter of test "
                         f"codes, not the 2-D manifold.")
        return notes

    # -- helpers ------------------------------------------------------------------------------------------------

    def _labels(self, label: int | None) -> Tensor | None:
        """One example's label tensor (1,) for a conditional model, None for any other."""
        if not self.num_classes:
            return None
        return torch.tensor([int(label)], dtype=torch.long, device=self.device)

    def _decode(self, z: Tensor, label: int | None) -> Tensor:
        """Decodes of ``z`` as images in [0, 1], whatever the model's ``image_range``."""
        return decode_images(self.model, z, label)

    def label(self, value: Any) -> int | None:
        """The requested class, checked (None for an unconditional model)."""
        return checks.label(value, self.num_classes)

    def check_code(self, code: Any) -> Tensor:
        """A starting code from the page's state, checked against this model's latent shape."""
        if not isinstance(code, Tensor):
            raise RequestError("no starting point yet: draw an image, or press 'Sample a point'")
        if tuple(code.shape) != (1, *self.shape):
            raise RequestError(f"the starting point has shape {tuple(code.shape[1:])}, this model's latent "
                               f"{self.shape}: the model changed, so draw or sample again")
        if not bool(torch.isfinite(code).all()):
            raise RequestError("the starting point holds non-finite values")
        return code.to(self.device)

    def read(self, image: Any) -> tuple[Tensor, list[str]]:
        """An image from the page as a model input (1, C, H, W) on the device, and what was adapted."""
        x, notes = images.to_input(image, self.input_shape, self.background)
        return x.to(self.device), notes

    # -- draw or upload ---------------------------------------------------------------------------------------

    @_inference
    def reconstruct(self, image: Any, label: Any = None) -> Reading:
        """The image's reconstruction, posterior per unit (mean, spread, KL) and code."""
        y = self._labels(self.label(label))
        x, notes = self.read(image)
        posterior = posterior_of(self.model, x, y)
        code = posterior.mode()
        mean = unit_mean(code.float(), self.shape)[0].cpu()
        if isinstance(posterior, DiagonalGaussian):
            spread, spread_name = unit_mean(posterior.variance.float(), self.shape)[0].sqrt().cpu(), "std"
        else:
            draws = posterior.sample(SPREAD_SAMPLES, generator=torch.Generator(self.device).manual_seed(0))
            spread = unit_mean(draws.float().var(0), self.shape)[0].sqrt().cpu()
            spread_name = f"std of {SPREAD_SAMPLES} samples"
        kl = latent_kl(self.model, posterior) if self.unit_kl else None
        kl = unit_sum(kl.float(), self.shape)[0].cpu() if kl is not None else None
        unit = "channel (mean over positions)" if self.spatial else "latent"
        kind = type(posterior).__name__
        chart = posterior_chart(mean, spread, unit=unit, spread_name=spread_name, prior=self.unit_kl,
                                title=f"{self.name}: posterior q(z|x) ({kind}) per {unit}")
        table = [[u, round(float(mean[u]), 4), round(float(spread[u]), 4)] +
                 ([round(float(kl[u]), 4)] if kl is not None else []) for u in range(self.shape[0])]
        recon = self._decode(code, y)
        return Reading(images.to_array(x), images.to_array(recon), code, chart, table, notes)

    def table_header(self) -> list[str]:
        unit = unit_name(self.shape)
        return [unit, "mean", "spread"] + (["KL (nats)"] if self.unit_kl else [])

    @_inference
    def likelihood(self, image: Any, label: Any = None) -> str:
        """The image's negative ELBO and its terms and its importance-sampled NLL (variational models), or its
        reconstruction NLL (models with a likelihood), as Markdown; a one-line note for other models."""
        from zoo.metrics import elbo_terms, importance_sampled_nll

        y = self._labels(self.label(label))
        x, _ = self.read(image)
        if self.variational:
            data = TensorData(x, y)
            terms = elbo_terms(self.model, data, num_samples=ELBO_SAMPLES, batch_size=1)
            nll = importance_sampled_nll(self.model, data, num_samples=NLL_SAMPLES, batch_size=1, seed=0)["nll"]
            return (f"| term | nats |\n| --- | --- |\n"
                    f"| negative ELBO ({ELBO_SAMPLES} samples of z) | {terms['neg_elbo']:.2f} |\n"
                    f"| reconstruction -E_q log p(x\\|z) | {terms['reconstruction']:.2f} |\n"
                    f"| KL(q(z\\|x) \\|\\| p(z)) | {terms['kl']:.2f} |\n"
                    f"| NLL -log p(x), importance sampled, K = {NLL_SAMPLES} | {nll:.2f} |\n\n"
                    f"K = {NLL_SAMPLES} here so the page answers at once; the model card's NLL uses K = 1000.")
        if has(self.model, "has_likelihood"):
            code = posterior_of(self.model, x, y).mode()
            nll = float(likelihood_nll(self.model, x, code, y)[0])
            return (f"Reconstruction -log p(x|z) at the code: **{nll:.2f}**\n\n" +
                    skip_note(self.model, "variational", "ELBO terms and importance-sampled NLL"))
        return skip_note(self.model, "has_likelihood", "likelihood")

    # -- sliders ----------------------------------------------------------------------------------------------

    def sliders(self, code: Tensor | None = None) -> list[Slider]:
        """The sliders for a starting code (ranges widened to include the code's own values)."""
        out = []
        for u in self.units:
            low = float(self.centre[u] - SLIDER_SPAN * self.scale[u])
            high = float(self.centre[u] + SLIDER_SPAN * self.scale[u])
            if code is not None:
                value = float(code[(0, u, *self.position)])
                low, high = min(low, value), max(high, value)
            where = f" at {self.position}" if self.spatial else ""
            score = f"KL {self.score[u]:.2f} nats" if self.unit_kl and self.data is not None else (
                f"variance {self.score[u]:.3g}" if self.data is not None else "unranked")
            out.append(Slider(u, f"{unit_name(self.shape)} {u}{where} ({score})",
                              math.floor(low * 100) / 100, math.ceil(high * 100) / 100))
        return out

    def slider_values(self, code: Tensor) -> list[float]:
        """The shown units' values in a code (1, *latent_shape)."""
        return [float(code[(0, u, *self.position)]) for u in self.units]

    @_inference
    def sample_point(self, seed: Any) -> Tensor:
        """A starting code drawn with ``seed``: from the prior N(0, I) for a variational model with a per-unit KL
        (the prior the zoo's sliders and traversals are in units of), else the code of a random test image."""
        generator = torch.Generator().manual_seed(checks.seed(seed))
        if self.unit_kl:
            return torch.randn(1, *self.shape, generator=generator).to(self.device)
        if self.codes is None:
            raise RequestError("no test data to draw a starting code from: draw an image instead")
        index = int(torch.randint(len(self.codes), (1,), generator=generator))
        return self.codes[index:index + 1].to(self.device)

    @_inference
    def decode_sliders(self, code: Any, values: Sequence[Any], label: Any = None) -> np.ndarray:
        """Decode the starting code with each shown unit set to its slider's value."""
        values = checks.finite_values(values, len(self.units), "slider")
        z = self.check_code(code).clone()
        for u, value in zip(self.units, values, strict=True):
            z[(0, u, *self.position)] = value
        return images.to_array(self._decode(z, self._labels(self.label(label))))

    # -- interpolation ------------------------------------------------------------------------------------------

    @_inference
    def interpolation(self, image_a: Any, image_b: Any, method: str, label: Any = None
                      ) -> tuple[np.ndarray, Tensor]:
        """A strip of ``INTERPOLATION_STEPS`` decodes from image A's code to image B's
        (:func:`zoo.pictures.interpolate`), and the two codes (2, *latent_shape) for :meth:`interpolate_at`."""
        if method not in pictures.INTERPOLATIONS:
            raise RequestError(f"unknown interpolation {method!r}: choose {' or '.join(pictures.INTERPOLATIONS)}")
        y = self._labels(self.label(label))
        x_a, _ = self.read(image_a)
        x_b, _ = self.read(image_b)
        strip = pictures.interpolate(self.model, x_a, x_b, steps=INTERPOLATION_STEPS, method=method, y=y)
        codes = torch.cat([posterior_of(self.model, x, y).mode() for x in (x_a, x_b)])
        return images.grid(strip, nrow=INTERPOLATION_STEPS), codes

    @_inference
    def interpolate_at(self, codes: Any, t: Any, method: str, label: Any = None) -> np.ndarray:
        """The decode at fraction ``t`` (0: A, 1: B) between two codes, linear or spherical."""
        if not isinstance(codes, Tensor) or tuple(codes.shape) != (2, *self.shape):
            raise RequestError("interpolate two images first (the codes are missing or from another model)")
        if method not in pictures.INTERPOLATIONS:
            raise RequestError(f"unknown interpolation {method!r}: choose {' or '.join(pictures.INTERPOLATIONS)}")
        t = checks.fraction(t, "the interpolation fraction t")
        a, b = codes.to(self.device).flatten(1)
        z = pictures.slerp(a, b, t) if method == "slerp" else (1 - t) * a + t * b
        return images.to_array(self._decode(z.reshape(1, *self.shape), self._labels(self.label(label))))

    @_inference
    def test_pair(self, seed: Any) -> tuple[np.ndarray, np.ndarray]:
        """Two test images drawn with ``seed``, of two different labels where the data have labels."""
        if self.data is None:
            raise RequestError("no test data for this model: upload two images instead")
        generator = torch.Generator().manual_seed(checks.seed(seed))
        order = torch.randperm(len(self.data), generator=generator)
        i = int(order[0])
        others = order[1:] if self.data.y is None else order[1:][self.data.y[order[1:]] != self.data.y[i]]
        j = int((others if len(others) else order[1:])[0])
        return images.to_array(self.data.x[i]), images.to_array(self.data.x[j])

    # -- prior samples ------------------------------------------------------------------------------------------

    @_inference
    def samples(self, seed: Any, label: Any = None) -> np.ndarray:
        """``SAMPLES`` prior samples drawn with ``seed`` (of class ``label`` for a conditional model)."""
        if not self.generative:
            raise RequestError(skip_note(self.model, "generative", "prior samples"))
        drawn = pictures.prior_samples(self.model, SAMPLES, y=self.label(label), seed=checks.seed(seed))
        return images.grid(drawn, nrow=SAMPLES_PER_ROW)

    # -- the map: 2-D manifold or PCA scatter ---------------------------------------------------------------------

    @property
    def map_kind(self) -> str | None:
        """"manifold" for a flat 2-D latent, "scatter" when test codes were encoded, else None."""
        return "manifold" if self.shape == (2,) else "scatter" if self.scatter is not None else None

    @_inference
    def map_picture(self, label: Any = None) -> np.ndarray | None:
        """The clickable picture: the decoded 2-D manifold, or the scatter of test codes (None if neither)."""
        if self.map_kind == "manifold":
            tiles = pictures.manifold(self.model, MANIFOLD_N, bound=MANIFOLD_BOUND, y=self.label(label))
            return images.grid(tiles, nrow=MANIFOLD_N, padding=0)
        return None if self.scatter is None else self.scatter.picture

    def manifold_code(self, x: int, y: int) -> Tensor:
        """The code at pixel (x, y) of the manifold picture: the grid's quantiles continued between tiles, so a
        tile's centre gives exactly the code that drew it (z1 grows to the right, z2 upwards)."""
        _, height, width = self.input_shape
        normal = torch.distributions.Normal(0.0, 1.0)
        step = (1 - 2 * MANIFOLD_BOUND) / (MANIFOLD_N - 1)
        column, row = (x + 0.5) / width - 0.5, (y + 0.5) / height - 0.5  # in tiles, 0 at the first tile's centre
        u = torch.tensor([MANIFOLD_BOUND + column * step, MANIFOLD_BOUND + (MANIFOLD_N - 1 - row) * step])
        return normal.icdf(u.clamp(1e-4, 1 - 1e-4)).reshape(1, 2).to(self.device)

    @_inference
    def pick(self, index: Any, label: Any = None) -> tuple[np.ndarray, str]:
        """Decode the point clicked at ``index`` (x, y) on the map picture, and say which point it was."""
        if self.map_kind is None:
            raise RequestError("this model has no map: it needs a 2-D latent or test data for the scatter")
        height, width = ((MANIFOLD_N * self.input_shape[1], MANIFOLD_N * self.input_shape[2])
                         if self.map_kind == "manifold" else self.scatter.picture.shape[:2])
        x, y = checks.point(index, width, height)
        if self.map_kind == "manifold":
            z = self.manifold_code(x, y)
            caption = f"z = ({float(z[0, 0]):.3f}, {float(z[0, 1]):.3f})"
            return images.to_array(self._decode(z, self._labels(self.label(label)))), caption
        i, distance = self.scatter.nearest(x, y)
        y_i = None if self.data.y is None else int(self.data.y[i])
        own = self._labels(y_i if y_i is not None else self.label(label))  # unlabelled data: the picked class
        caption = (f"test image {i}" + ("" if y_i is None else f" (label {y_i})") +
                   f", {distance:.0f} px from the click: its code decoded")
        return images.to_array(self._decode(self.codes[i:i + 1].to(self.device), own)), caption


def dataset_of(model: nn.Module, name: str) -> str | None:
    """The dataset a model was trained on: its registered checkpoint's, else the first its card names."""
    from zoo.cards import front_matter
    from zoo.plugins import get_registry

    ref = get_registry().checkpoints.get(name)
    if ref is not None and ref.dataset:
        return ref.dataset
    folder = (getattr(model, "pretrained_info", {}) or {}).get("path")
    card = Path(folder) / "README.md" if folder else None
    if card is None or not card.is_file():
        return None
    return (front_matter(card).get("datasets") or [None])[0]


def card_text(model: nn.Module, name: str) -> str:
    """The model card's Markdown without its front matter (a line saying there is none otherwise)."""
    folder = (getattr(model, "pretrained_info", {}) or {}).get("path")
    card = Path(folder) / "README.md" if folder else None
    if card is None or not card.is_file():
        return f"*{name} has no model card (README.md) in its folder.*"
    text = card.read_text()
    if text.startswith("---"):
        text = text.split("\n---", 1)[1].split("\n", 1)[1] if "\n---" in text else text
    return text.strip()


class Explorers:
    """Loaded explorers by model name, the ``capacity`` most recently used kept in memory, one load at a time.

    ``device`` is where models go (``"auto"``: a GPU when there is one); ``data``, a dataset name used for
    every model instead of the one its card names.
    """

    def __init__(self, device: str = "auto", data: str | None = None, capacity: int = 4) -> None:
        from zoo.devices import resolve_device

        self.device = resolve_device(device)
        self.data = data
        self.capacity = capacity
        self._loaded: OrderedDict[str, Explorer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: Any) -> Explorer:
        """The explorer of ``name`` (a checkpoint name, ``hf-hub:``/``local-dir:`` reference or folder)."""
        if not isinstance(name, str) or not name.strip():
            raise RequestError("pick a model: a checkpoint name, hf-hub:ORG/NAME, local-dir:PATH or a folder")
        name = name.strip()
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(name)
            return self._loaded[name]

    def _load(self, name: str) -> Explorer:
        from zoo.data import as_data
        from zoo.errors import DataError
        from zoo.registry import from_pretrained

        model = from_pretrained(name, device=self.device)
        dataset = self.data or dataset_of(model, name)
        data = None
        if dataset is not None:
            try:
                data = as_data(dataset, None, split="test")
            except DataError:
                data = None
        if data is not None and not isinstance(data, TensorData):
            data = None  # a streaming source: too large to summarise for a page
        return Explorer(model, name, data, dataset)
