"""The fused reparameterised draw and KL (zoo.gaussian_draw): the same numbers as the plain operations, gradients
checked numerically, and used only where nothing else changes."""

from __future__ import annotations

import pytest
import torch
from zoo_plugins.vae import keeps_standard_normal_prior

import zoo
from zoo.distributions import DiagonalGaussian
from zoo.gaussian_draw import DrawAndKL


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """The names of the autograd nodes ``tensor`` was computed through."""
    seen, todo, names = set(), [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(parent for parent, _ in node.next_functions)
    return names


@pytest.mark.parametrize("shape", [(5, 3), (3, 4, 2, 2)], ids=["flat", "spatial"])
def test_draw_and_kl_gradients_match_finite_differences(shape):
    gen = torch.Generator().manual_seed(0)
    mean, logvar = (torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    eps = torch.randn(shape, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m, lv: DrawAndKL.apply(m, lv, eps), (mean, logvar))


@pytest.mark.parametrize("shape", [(16, 2), (4, 3, 2, 2)], ids=["flat", "spatial"])
def test_sample_and_kl_is_sample_and_kl_bit_for_bit_with_autograd_gradients(shape):
    gen = torch.Generator().manual_seed(1)
    raw = torch.randn((shape[0], 2 * shape[1], *shape[2:]), generator=gen, requires_grad=True)
    weights = torch.randn(shape, generator=gen), torch.randn(shape[0], generator=gen)

    def draw(fused: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = DiagonalGaussian(*raw.chunk(2, dim=1))
        torch.manual_seed(2)
        if fused:
            z, kl = posterior.sample_and_kl()
        else:
            z, kl = posterior.sample(), posterior.kl().flatten(1).sum(-1)
        (grad,) = torch.autograd.grad((z * weights[0]).sum() + (kl * weights[1]).sum(), raw)
        return z, kl, grad

    fused, plain = draw(True), draw(False)
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
    torch.testing.assert_close(fused[2], plain[2], rtol=1e-6, atol=1e-7)


def test_the_vae_loss_takes_the_fused_node_in_float32_and_the_plain_operations_under_autocast():
    torch.manual_seed(0)
    model = zoo.create("vae", input_shape=(1, 8, 8), hidden_dims=(16,), latent_dim=2)
    variant, x = zoo.get_variant("vae"), torch.rand(8, 1, 8, 8).round()
    assert "DrawAndKLBackward" in graph_nodes(variant.loss(model, (x,)).total)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = variant.loss(model, (x,))
    assert "DrawAndKLBackward" not in graph_nodes(out.total)
    assert out.terms["kl"].dtype == torch.float32  # the plain KL's float32 arithmetic, as before


@pytest.mark.parametrize(("name", "fused"), [("vae", True), ("cvae", True), ("beta-vae", True),
                                             ("vamp-vae", False), ("svae", False), ("ladder-vae", False)])
def test_only_models_with_the_standard_normal_prior_take_the_fused_kl(name, fused):
    model = zoo.create(name, zoo.get_variant(name).tiny_config())
    assert keeps_standard_normal_prior(model) is fused
