"""The benchmarks compare like with like: their hand-written sides compute what the zoo computes.

The timings themselves are not tested (speed is measured in ``make bench``, not in timed tests); what
is tested is what makes a ratio meaningful: the same layers, initial weights, losses and gradients on
both sides, and the page the results are written to.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench  # noqa: E402  (a script folder, not a package)
import bench_diffusers  # noqa: E402
import bench_overhead  # noqa: E402
import bench_paths  # noqa: E402
import gpu_checks  # noqa: E402
from common import EpochTimer, in_fresh_process, write_doc  # noqa: E402

import zoo  # noqa: E402
from zoo.data import load_dataset  # noqa: E402
from zoo.dsprites import sample_subset  # noqa: E402


@pytest.fixture(scope="module")
def mnist() -> torch.Tensor:
    return load_dataset("mnist", "train").x[:128]


def test_mlp_sides_compute_the_same_loss(mnist: torch.Tensor) -> None:
    bench.check_same_model(mnist)


def test_mlp_check_catches_a_different_loss(mnist: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written side without the KL term must not pass as the same model."""
    def without_kl(self: bench.HandVAE, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.nn.functional.binary_cross_entropy_with_logits(self.dec(z), x.flatten(1),
                                                                    reduction="none").sum(1).mean()

    monkeypatch.setattr(bench.HandVAE, "loss", without_kl)
    with pytest.raises(AssertionError):
        bench.check_same_model(mnist)


def test_diffusers_fine_tuning_sides_compute_the_same_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    x = bench_diffusers.images(4, bench_diffusers.TINY["sample_size"], seed=9)
    bench_diffusers.check_same_loss(bench_diffusers.TINY, x)
    direct = bench_diffusers.direct_model(bench_diffusers.TINY, 0)
    trainable = {n for n, p in direct.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(bench_diffusers.FROZEN) for n in trainable)

    def squared(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:  # L2 instead of the Laplace NLL
        x = x * 2 - 1
        posterior = vae.encode(x).latent_dist
        return (x - vae.decode(posterior.sample()).sample).pow(2).flatten(1).sum(1).mean()

    monkeypatch.setattr(bench_diffusers, "direct_loss", squared)
    with pytest.raises(AssertionError):
        bench_diffusers.check_same_loss(bench_diffusers.TINY, x)


def test_conv_vae_sides_compute_the_same_loss() -> None:
    subset = sample_subset(bench_paths.VAE_BATCH, seed=0)
    bench_paths.check_conv_vae(subset.images(torch.arange(len(subset))))


def test_vae_gan_sides_compute_the_same_losses_and_gradients(mnist: torch.Tensor) -> None:
    bench_paths.check_vae_gan(mnist[:16])


def test_epoch_timer_marks_every_epoch(mnist: torch.Tensor) -> None:
    model = zoo.create("vae", latent_dim=4, hidden_dims=(32,))
    variant = zoo.get_variant("vae")
    timer = EpochTimer(steps_per_epoch=4)  # 128 rows in batches of 32
    timer.wrap(variant)
    try:
        zoo.train(model, mnist, epochs=3, batch_size=32, progress=False, device="cpu")
    finally:
        del variant.train_step
    times = timer.epochs()
    assert len(times) == 3 and all(t > 0 for t in times)


@pytest.mark.parametrize("side", ["zoo", "hand_fused"])
def test_a_timed_run_in_a_fresh_process(tmp_path: Path, side: str) -> None:
    """What bench.py runs for each side: epoch times and a held-out loss, from a process of its own."""
    data = tmp_path / "mnist.npz"
    x = load_dataset("mnist", "train").x
    np.savez(data, train=x[:256].numpy(), test=x[256:320].numpy())
    run = in_fresh_process("bench", "side_run", 1, {"side": side, "data": str(data), "epochs": 2, "seed": 0,
                                                    "test_seed": 1, "device": "cpu", "precision": "fp32",
                                                    "threads": 1})
    assert len(run["epoch_times"]) == 2 and all(t > 0 for t in run["epoch_times"])
    assert 100 < run["test_neg_elbo"] < 600  # an MLP VAE after 4 steps: well below 784 * log 2


def test_a_failed_run_says_what_failed() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)bench.side_run.*failed in its process.*TypeError"):
        in_fresh_process("bench", "side_run", 1, {"side": "zoo"})


def test_write_doc_replaces_one_part_and_keeps_the_others(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    write_doc("# Head 1\n", path=page)
    write_doc("## Paths 1\n", "paths", path=page)
    write_doc("# Head 2\n", path=page)
    assert page.read_text() == "# Head 2\n\n<!-- paths -->\n## Paths 1\n<!-- /paths -->\n"
    write_doc("## Paths 2\n", "paths", path=page)
    assert page.read_text() == "# Head 2\n\n<!-- paths -->\n## Paths 2\n<!-- /paths -->\n"


PYTHAE_PYTHON = BENCHMARKS / ".pythae-venv" / "bin" / "python"


@pytest.mark.skipif(not PYTHAE_PYTHON.exists(), reason="no pythae environment (make bench-pythae-env)")
def test_pythae_side_starts_from_the_hand_written_weights(tmp_path: Path) -> None:
    """pythae's run reports epoch times, a finite test loss and the initial weights bench.py checks."""
    data = tmp_path / "mnist.npz"
    x = load_dataset("mnist", "train").x
    np.savez(data, train=x[:256].numpy(), test=x[256:384].numpy())
    run = bench.pythae_epochs(PYTHAE_PYTHON, data, epochs=2, seed=3, test_seed=0, threads=1)
    assert len(run["epoch_times"]) == 2 and np.isfinite(run["test_neg_elbo"])
    out = subprocess.run([str(PYTHAE_PYTHON), "-c", "import zoo"], capture_output=True, text=True)
    assert out.returncode != 0, "pythae's environment must not see the zoo: the comparison would not be separate"


@pytest.mark.parametrize("workload", list(bench_overhead.WORKLOADS))
def test_overhead_sides_compute_the_same_loss_and_gradients(workload: str) -> None:
    """The hand loop's loss is the zoo VAE's loss (its negative ELBO) on the same batch and noise, with the
    same gradients: the overhead benchmark times two loops around one computation."""
    model, data, spec = bench_overhead.setup(workload)
    x = data.x[:spec["batch_size"]]
    torch.manual_seed(3)
    ours = zoo.get_variant("vae").loss(model, (x,)).total
    ours_grads = torch.autograd.grad(ours, list(model.parameters()))
    torch.manual_seed(3)
    theirs = bench_overhead.hand_loss(model, x)
    theirs_grads = torch.autograd.grad(theirs, list(model.parameters()))
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-4)
    for a, b in zip(theirs_grads, ours_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gpu_checks_skip_what_does_not_fit_the_budget() -> None:
    """A part starts only if its whole limit fits in what is left of the budget; the log says why one did not."""
    planned = dict(gpu_checks.plan(["dsprites", "overhead", "diffusers"], 800))
    assert planned["dsprites"] is None and planned["diffusers"] is None  # 560 + 240 = 800
    assert planned["overhead"] == "skipped: its limit is 300 s and 240 s of the budget are left"


def test_gpu_checks_bring_back_what_a_part_wrote_and_stop_one_at_its_limit(tmp_path, monkeypatch) -> None:
    """A part's new file is copied into OUT under its flat name, one left from before is not, and a part that
    outlives its limit is stopped and logged so, the run going on."""
    written, stale = tmp_path / "written.json", tmp_path / "stale.json"
    stale.write_text("from an earlier run")
    write = f"open({str(written)!r}, 'w').write('new')"
    monkeypatch.setattr(gpu_checks, "PARTS", {
        "writes": gpu_checks.Part(0, ("-c", write), 60, ((str(written), "a.json"), (str(stale), "b.json"))),
        "hangs": gpu_checks.Part(0, ("-c", "import time; time.sleep(30)"), 60, ()),
    })
    out, log = tmp_path / "out", []
    out.mkdir()
    gpu_checks.run_part("writes", 60, out, log)
    gpu_checks.run_part("hangs", 1, out, log)
    assert sorted(p.name for p in out.iterdir()) == ["a.json"]
    assert (out / "a.json").read_text() == "new"
    assert "exit status 0" in log[1] and f"wrote {written} (in OUT as a.json)" in log
    assert any(line.startswith("stopped at its limit of 1 s") for line in log)
