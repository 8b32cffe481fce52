"""``ZooModel``: the model contract every tool of the zoo relies on (CONTRIBUTING.md, "The model contract").

- ``config``: the variant's config dataclass; ``latent_shape``: one example's code, ``(D,)`` or ``(C, h, w)``;
  ``num_classes``: the labels a conditional model takes (0 otherwise); ``image_range``: the range of the
  images it takes and returns ((0, 1) unless it says otherwise).
- ``encode(x, y=None)`` -> a :class:`~zoo.distributions.Posterior`; ``decode(z, y=None)`` -> images;
  ``forward(x, y=None)`` -> the reconstruction (deterministic in eval mode).
- ``sample(n, y=None, generator=None)`` for variants that declare ``generative``; every model also takes
  ``sample(n, sampler=NAME)``: decoded draws of an ex-post sampler fitted with ``fit_sampler`` (:mod:`zoo.samplers`),
  which a subclass's ``sample`` gets without writing anything;
  ``reconstruction_nll(x, z, y=None)`` for those that declare ``has_likelihood``;
  ``prior_log_prob(z)``, ``latent_kl(posterior)`` and ``example_kl(posterior)`` for those that declare
  ``variational``; optionally ``latent_groups`` and ``group_kl(posterior, z)`` for a latent of several layers
  (:func:`zoo.contract.latent_groups`).

A model made by :func:`zoo.create` or :func:`zoo.load` also knows its ``variant_name`` and
``pretrained_info`` (provenance: name, source, revision), as timm models carry ``pretrained_cfg``.
``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` follow the Hugging Face convention.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.distributions import Posterior, standard_normal_log_prob

M = TypeVar("M", bound="ZooModel")


class ZooModel(nn.Module):
    """Base class of zoo networks: holds the config, saves itself in the one folder layout."""

    variant_name: str = ""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.pretrained_info: dict[str, Any] = {}
        #: Fitted ex-post samplers by name (:mod:`zoo.samplers`); their tensors are saved with the weights.
        self.samplers = nn.ModuleDict()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own ``sample`` gains the ``sampler=`` keyword: ``model.sample(n, sampler="gmm")`` works for
        every model, whatever its ``sample`` was written to take."""
        super().__init_subclass__(**kwargs)
        if "sample" in cls.__dict__:
            cls.sample = _taking_sampler(cls.__dict__["sample"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One example's code: ``(latent_dim,)`` by default; override for a spatial latent ``(C, h, w)``."""
        latent_dim = getattr(self.config, "latent_dim", None)
        if latent_dim is None:
            raise NotImplementedError(f"{type(self).__name__} must define latent_shape (its config has no latent_dim)")
        return (int(latent_dim),)

    @property
    def image_range(self) -> tuple[float, float]:
        """(low, high): the range of the images ``encode``, ``forward`` and ``reconstruction_nll`` take and
        ``decode``, ``forward`` and ``sample`` return. (0, 1) by default, the range of the zoo's data;
        latent-diffusion autoencoders work on (-1, 1). The zoo's tools convert (:mod:`zoo.contract`)."""
        return 0.0, 1.0

    @property
    def num_classes(self) -> int:
        """How many labels a conditional model takes (``config.num_classes``); 0 for an unconditional one."""
        return int(getattr(self.config, "num_classes", 0) or 0)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """q(z|x): a :class:`~zoo.distributions.Posterior` over codes of shape ``latent_shape``."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images (the mean of p(x|z), in the data's range) from codes (batch, *latent_shape)."""
        raise NotImplementedError

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None, *,
               sampler: str | None = None) -> Tensor:
        """``n`` images from the model's prior (generative variants) or, with ``sampler``, from the codes of
        that fitted ex-post sampler."""
        if sampler is not None:
            return self.sample_from(sampler, n, y, generator)
        raise NotImplementedError(
            f"{self.variant_name or type(self).__name__} is not a generative model: it has no prior to "
            f"sample from. Use a variant that declares generative = True (vae, beta-vae, cvae, vae-gan), or fit an "
            f"ex-post sampler to its codes (model.fit_sampler('gmm', data)) and sample with sampler='gmm'."
        )

    def sample_from(self, sampler: str, n: int, y: Tensor | int | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` codes drawn from the fitted ex-post sampler ``sampler`` (no labels: it models p(z))."""
        from zoo.samplers import sample_codes

        if y is not None:
            raise ValueError(f"ex-post sampler {sampler!r} draws codes without labels: drop y")
        return self.decode(sample_codes(self, sampler, n, generator))

    def fit_sampler(self, name: str, data: Any, *, seed: int = 0, data_label: str | None = None,
                    **settings: Any) -> nn.Module:
        """Fit the ex-post sampler ``name`` (``zoo list`` shows them: gaussian, gmm, flow, two-stage, pixelcnn) to
        this model's codes of ``data`` and keep it (saved with the model); ``settings`` set its config fields and
        ``data_label`` names the data on the card.

        >>> model.fit_sampler("gmm", "mnist", num_components=10); model.sample(64, sampler="gmm")
        """
        from zoo.samplers import fit_sampler

        return fit_sampler(self, name, data, seed=seed, data_label=data_label, **settings)

    def reconstruction_nll(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x|z) per example in nats (deterministic autoencoders: their reconstruction error).

        ``z`` is (batch, *latent_shape) or carries leading Monte-Carlo dims (K, batch, *latent_shape);
        the result is (batch,) or (K, batch). Variants that implement it declare ``has_likelihood``.
        """
        raise NotImplementedError(f"{self.variant_name or type(self).__name__} defines no likelihood p(x|z)")

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) summed over the latent (leading sample dims kept); the standard normal by default."""
        return standard_normal_log_prob(z, len(self.latent_shape))

    def latent_kl(self, posterior: Posterior) -> Tensor | None:
        """KL(q(z|x) || p(z)) per latent element, (batch, *latent_shape), in closed form; None where there is
        none: the prior does not factorise over the latent's elements (a mixture prior) or the posterior has
        no closed-form KL (a flow). The zoo then estimates the per-example KL by Monte Carlo, from draws and
        their log q(z|x) (:func:`zoo.contract.kl_per_example`), and leaves per-unit KL out.

        Default: the posterior's KL to the standard normal, the prior :meth:`prior_log_prob` defaults to. A
        model that overrides ``prior_log_prob`` overrides this too."""
        return posterior.kl() if posterior.closed_form_kl else None

    def example_kl(self, posterior: Posterior) -> Tensor | None:
        """KL(q(z|x) || p(z)) per example, (batch,), in closed form; None where there is none.

        Default: :meth:`latent_kl` summed over the latent. A model whose KL has a closed form that does not
        split over the latent's elements (a von Mises-Fisher posterior against the uniform prior on the
        sphere) overrides this and returns None from :meth:`latent_kl`."""
        kl = self.latent_kl(posterior)
        if kl is None:
            return None
        return kl.sum(-1) if kl.dim() == 2 else kl.flatten(1).sum(-1)

    @classmethod
    def from_pretrained(cls: type[M], name: str | Path, *, revision: str | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                        local_files_only: bool | None = None, cache_dir: str | Path | None = None,
                        subfolder: str | None = None, weights_variant: str | None = None) -> M:
        """Load a pretrained model of this class, as Hugging Face users type it.

        ``name`` is a Hub repo id (``"ORG/NAME"``, or ``"hf-hub:ORG/NAME@REV"``), a registered checkpoint
        name (``"cvae-mnist"``) or a model folder. Resolution, strict loading and errors are
        :func:`zoo.load`'s; a folder whose variant builds another class is refused before its weights are loaded.
        """
        from zoo.registry import from_pretrained

        return from_pretrained(name, revision=revision, device=device, dtype=dtype, local_files_only=local_files_only,
                               cache_dir=cache_dir, expected_class=cls, subfolder=subfolder,
                               weights_variant=weights_variant)

    #: Layouts besides the zoo's own that :meth:`save_pretrained` can write (e.g. ``("diffusers",)``).
    export_formats: ClassVar[tuple[str, ...]] = ()

    def save_pretrained(self, save_directory: str | Path, *, card: str | None = None, format: str = "zoo") -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` (atomically) to a folder; with
        ``format="diffusers"`` (models that list it in ``export_formats``) diffusers' layout instead, which
        that library's ``from_pretrained`` loads, beside the same README.md card."""
        from zoo.folder import export_folder, save_folder

        if format == "zoo":
            return save_folder(self, save_directory, card=card)
        return export_folder(self, save_directory, format, card=card)

    def export(self, format: str, directory: Path) -> None:
        """Write this model's files in layout ``format`` (one of ``export_formats``) into ``directory``."""
        raise NotImplementedError(f"{type(self).__name__} writes no {format!r} layout")

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Publish the three files to the Hugging Face Hub as one commit (``revision``, ``private``,
        ``commit_message``, ``endpoint``, ``token`` as in :func:`zoo.hub.push_folder`)."""
        from zoo.hub import push_model

        return push_model(self, repo_id, **kwargs)


def _taking_sampler(sample: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``sample`` with a ``sampler`` keyword that, when given, decodes that fitted ex-post sampler's draws."""

    @functools.wraps(sample)
    def with_sampler(self: ZooModel, n: int, y: Tensor | int | None = None,
                     generator: torch.Generator | None = None, *, sampler: str | None = None) -> Tensor:
        if sampler is not None:
            return self.sample_from(sampler, n, y, generator)
        return sample(self, n, y=y, generator=generator)

    return with_sampler


def condition_vector(y: Tensor | int | None, num_classes: int, n: int, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> Tensor | None:
    """Labels (int, (n,) ints, or (n, num_classes) one-hot/soft) -> (n, num_classes) float, or None."""
    if num_classes == 0:
        return None
    if y is None:
        raise ValueError(f"this model is conditional on {num_classes} classes: pass y (labels 0..{num_classes - 1})")
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.long, device=device)
    y = y.to(device)
    if y.dim() == 2:
        return y.to(dtype)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return F.one_hot(y.long(), num_classes).to(dtype)
