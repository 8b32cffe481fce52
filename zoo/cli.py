"""The ``zoo`` command: list, info, plugins, train, eval, push, fetch, sample, fit-sampler, experiment, explore."""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError


def main(argv: list[str] | None = None) -> int:
    """Run one ``zoo`` command; a user error is one line ``zoo: error: ...`` on stderr and exit code 2."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
        args.argv = argv  # the exact command, recorded in the model card by `zoo train`
        return args.func(args) or 0
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2


def entry_point() -> int:
    """The ``zoo`` console script and ``python -m zoo``: :func:`main`, then the end of a process that
    trained under torchrun (:func:`zoo.distributed.end_process`)."""
    from zoo.distributed import end_process

    return end_process(main())


class Parser(argparse.ArgumentParser):
    """argparse with its errors as :class:`UsageError`: one line like every other user error, instead of
    the usage block and a separate message."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zoo", description="ae-zoo: autoencoders for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="installed variants and pretrained checkpoints")
    p.add_argument("pattern", nargs="?", help="wildcard filter, e.g. '*vae*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="a variant's settings, or a checkpoint's card")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plugins", help="loaded plugins, what they registered, and failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("train", help="train a variant and write config.json, model.safetensors, README.md")
    p.add_argument("variant")
    p.add_argument("--data", default="mnist", help="dataset name (mnist, digits, mnist-full) or image folder")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (with --resume: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (with --resume: the checkpoint's)")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (with --resume: the checkpoint's; "
                                                          "another value applies from the resume step)")
    p.add_argument("--seed", type=int, default=None, help="default 0 (with --resume: the checkpoint's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, repeatable, e.g. --set latent_dim=8")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="write a resumable checkpoint to OUT/checkpoints every STEPS steps and at each epoch end")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT/checkpoints; settings "
                                                         "not given are the checkpoint's")
    p.add_argument("--precision", default=None, help="fp32 (default), bf16 or fp16: autocast, weights stay fp32 "
                                                     "(fp16 adds a gradient scaler; on the CPU use bf16)")
    p.add_argument("--log-every", type=int, default=None, metavar="STEPS",
                   help="log every term every STEPS steps to OUT/logs (CSV, JSONL, TensorBoard) with per-epoch "
                        "validation and picture grids; pass it again with --resume to append")
    p.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a process waits for the others before the run fails, naming "
                        "the silent ones (default 600)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the loss (forward and backward); MODE is torch.compile's: default, "
                        "reduce-overhead (CUDA graphs on a GPU), max-autotune (off by default: see docs/benchmarks.md)")
    p.add_argument("--finite-check", choices=("auto", "step", "deferred"), default=None,
                   help="where a non-finite loss is caught: step (a host read per step), deferred (on the device; "
                        "the bad step is skipped and the run stops at the next report), auto (default: deferred "
                        "on a GPU where it applies)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a pretrained model on your data: OUT/ best weights, OUT/last/ last")
    p.add_argument("name", help="a checkpoint name, hf-hub:ORG/NAME or a saved folder")
    p.add_argument("--data", required=True, help="dataset name (mnist, digits, mnist-full), image folder (flat, or "
                                                 "one sub-folder per class) or .npz/.safetensors tensor file")
    p.add_argument("--out", required=True, type=Path, help="output folder (best weights; OUT/last: the last ones)")
    p.add_argument("--epochs", type=int, default=None, help="default 10")
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--lr", type=float, default=None, help="default 1e-4, a tenth of zoo train's")
    p.add_argument("--seed", type=int, default=None, help="default 0; also draws the validation part")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--freeze", action="append", default=None, metavar="MODULE",
                   help="hold a top-level module's weights fixed (encoder, decoder, codebook, ...); repeat it or "
                        "write a comma list: --freeze encoder,codebook")
    p.add_argument("--reset-head", action="store_true",
                   help="re-initialise only the weights whose shape a config change alters (e.g. cvae with another "
                        "number of classes) and load all others")
    p.add_argument("--crop-size", type=int, default=None, metavar="PIXELS",
                   help="train on random PIXELS x PIXELS crops of images of any size (an image folder) instead of "
                        "resizing them: for fully convolutional models such as autoencoder-kl")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, repeatable, e.g. --set beta=2 --set warmup_steps=500")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of the data held out (seeded) for early stopping and the card's metrics (default 0.1)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop after this many epochs without a better validation loss (default 3)")
    p.add_argument("--nll-samples", type=int, default=None, help="importance samples for the validation NLL "
                                                                  "(default 100; 0: skip)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="write a resumable checkpoint to OUT/checkpoints every STEPS steps and at each epoch end")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT/checkpoints")
    p.add_argument("--precision", default=None, help="fp32 (default), bf16 or fp16, as for zoo train")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the loss, as for zoo train")
    p.add_argument("--finite-check", choices=("auto", "step", "deferred"), default=None,
                   help="where a non-finite loss is caught, as for zoo train")
    p.add_argument("--log-every", type=int, default=None, metavar="STEPS",
                   help="log every term every STEPS steps to OUT/logs, as for zoo train")
    p.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a process waits for the others, as for zoo train")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="measure a checkpoint or saved folder on a dataset's test split")
    p.add_argument("model", help="a checkpoint name, hf-hub:ORG/NAME or a saved folder")
    p.add_argument("--data", default=None, help="dataset name (default: the one in the model card, else mnist)")
    p.add_argument("--split", default="test")
    p.add_argument("--nll-samples", type=int, default=1000, help="importance samples for the NLL (0: skip)")
    p.add_argument("--elbo-samples", type=int, default=10, help="samples of z per example for the ELBO (default 10)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="also write DIR/report.md with per-latent numbers and every picture that applies")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a model in another library's folder layout (diffusers)")
    p.add_argument("model", help="a checkpoint name, hf-hub:ORG/NAME or a saved folder")
    p.add_argument("--format", required=True, help="the layout: diffusers")
    p.add_argument("--out", required=True, type=Path, help="the folder to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="publish a model folder to the Hugging Face Hub")
    p.add_argument("folder", type=Path)
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("fetch", help="download a checkpoint into the Hugging Face cache (for offline use)")
    p.add_argument("name", help="a registered checkpoint name or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--revision", default=None)
    p.add_argument("--force", action="store_true", help="download again even if cached (repairs a corrupt cache)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("sample", help="write a PNG grid of prior samples")
    p.add_argument("model", help="a saved folder or a checkpoint name")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--label", type=int, default=None, help="class to generate (conditional models)")
    p.add_argument("--sampler", default=None, help="decode draws of this fitted ex-post sampler instead of the prior "
                                                   "(e.g. gmm; fit one with `zoo fit-sampler`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("samples.png"))
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("fit-sampler", help="fit an ex-post sampler to a model's codes and save the model with it")
    p.add_argument("model", help="a saved folder or a checkpoint name")
    p.add_argument("sampler", help="gaussian, gmm, flow, two-stage, pixelcnn, or a plugin's (`zoo list` shows them)")
    p.add_argument("--data", default="mnist", help="whose codes to fit: a dataset name (its train split) or an image "
                                                   "folder")
    p.add_argument("--out", required=True, type=Path, help="folder to save the model with its fitted sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler setting, repeatable, e.g. --set num_components=20")
    p.set_defaults(func=cmd_fit_sampler)

    p = sub.add_parser("experiment", help="rerun one of the lecture's claims as a measured experiment")
    p.add_argument("name", help="an experiment name, 'all', or 'list'")
    p.add_argument("--out", type=Path, default=Path("experiments"), help="writes OUT/NAME/ (default: experiments)")
    p.add_argument("--quick", action="store_true", help="a short version (what the tests run)")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("explore", help="an interactive page for a model in the browser (pip install "
                                       "'ae-zoo[explore]')")
    p.add_argument("name", help="a checkpoint name, hf-hub:ORG/NAME, local-dir:PATH or a folder")
    p.add_argument("--port", type=int, default=None, help="default: the first free port from 7860")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only; "
                                                      "0.0.0.0 opens the page to the network)")
    p.add_argument("--share", action="store_true", help="also a public link through Gradio's tunnel servers (off "
                                                        "by default: no traffic leaves the machine)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--data", default=None, help="test data for slider ranges and the scatter (default: the "
                                                "dataset the model card names)")
    p.add_argument("--space", type=Path, default=None, metavar="OUT",
                   help="write a folder that runs as a Hugging Face Space instead of serving")
    p.set_defaults(func=cmd_explore)
    return parser


def cmd_list(args: argparse.Namespace) -> None:
    from zoo.plugins import get_registry
    from zoo.registry import list_checkpoints, list_variants

    registry = get_registry()
    variants = list_variants(args.pattern)
    print("Variants:")
    width = max((len(n) for n in variants), default=4)
    for name in variants:
        print(f"  {name:<{width}}  {registry.variants[name].description}  [{registry.variant_plugin[name]}]")
    checkpoints = list_checkpoints(args.pattern)
    print("Checkpoints:" if checkpoints else "Checkpoints: (none registered)")
    width = max((len(n) for n in checkpoints), default=4)
    for name in checkpoints:
        ref = registry.checkpoints[name]
        weights = Path(ref.folder) / "model.safetensors" if ref.folder else None
        size = (f"{weights.stat().st_size / 1e6:.1f} MB" if weights and weights.is_file()
                else f"on the Hub ({ref.hub_repo})" if ref.hub_repo else "bundled folder missing")
        print(f"  {name:<{width}}  variant={ref.variant}  dataset={ref.dataset or '-'}  {size}  {ref.headline_metric}")
    samplers = fnmatch.filter(list(registry.samplers), args.pattern) if args.pattern else list(registry.samplers)
    print("Ex-post samplers (zoo fit-sampler; model.sample(n, sampler=NAME)):" if samplers else
          "Ex-post samplers: (none registered)")
    width = max((len(n) for n in samplers), default=4)
    for name in samplers:
        print(f"  {name:<{width}}  {registry.samplers[name].description}  [{registry.sampler_plugin[name]}]")
    if registry.failures:
        print(f"{len(registry.failures)} plugin(s) failed to load: run `zoo plugins` for details.")


def cmd_info(args: argparse.Namespace) -> None:
    from zoo.config import config_to_dict
    from zoo.contract import CAPABILITIES
    from zoo.errors import UnknownNameError
    from zoo.plugins import get_registry
    from zoo.registry import get_checkpoint, get_variant

    registry = get_registry()
    if args.name in registry.checkpoints:
        ref = get_checkpoint(args.name)
        card = Path(ref.folder) / "README.md" if ref.folder else None
        print(card.read_text() if card and card.exists()
              else json.dumps(dataclasses.asdict(ref), default=str))
        return
    if args.name in registry.samplers:
        sampler = registry.samplers[args.name]
        print(f"{sampler.name}: {sampler.description}")
        print(f"plugin: {registry.sampler_plugin[sampler.name]}; an ex-post sampler (zoo fit-sampler MODEL "
              f"{sampler.name} --out DIR)")
        print("default settings (override with model.fit_sampler(name, data, key=value) or --set key=value):")
        print(json.dumps(config_to_dict(sampler.config_class()), indent=2))
        return
    if args.name not in registry.variants:
        raise UnknownNameError("variant, checkpoint or sampler name", args.name,
                               [*registry.variants, *registry.checkpoints, *registry.samplers],
                               "Run `zoo list` to see them.")
    variant = get_variant(args.name)
    plugin = registry.variant_plugin[variant.name]
    print(f"{variant.name}: {variant.description}")
    print(f"plugin: {plugin}; " + "; ".join(f"{flag}: {getattr(variant, flag)}" for flag in CAPABILITIES))
    print("default config (override with zoo.create(name, key=value) or --set key=value):")
    print(json.dumps(config_to_dict(variant.default_config()), indent=2))
    if variant.__doc__:
        print("\n" + " ".join(variant.__doc__.split()))


def cmd_plugins(args: argparse.Namespace) -> None:
    from zoo.plugins import get_registry, origin

    registry = get_registry()
    if args.json:
        print(json.dumps({"plugins": [dataclasses.asdict(p) for p in registry.plugins],
                          "failures": [dataclasses.asdict(f) for f in registry.failures]}, indent=2))
        return
    for p in registry.plugins:
        print(f"{p.name}  ({origin(p.distribution, p.version)}, {p.module})")
        print(f"    variants: {', '.join(p.variants) or '-'}; checkpoints: {', '.join(p.checkpoints) or '-'}; "
              f"samplers: {', '.join(p.samplers) or '-'}")
    for f in registry.failures:
        print(f"FAILED {f.name}  ({origin(f.distribution, f.version)}): {f.error}")


def cmd_train(args: argparse.Namespace) -> None:
    """Train, then (rank 0 alone under torchrun) measure the model and write its folder and card.

    Rank 0 holds the lock on OUT from before the first step until the folder is written, and checks
    first that OUT can be written and has room; a final write that still fails saves the weights to a
    rescue folder and says where.
    """
    from zoo.checkpointing import STATE_NAME
    from zoo.config import parse_override, replace_config
    from zoo.outputs import FolderLock, check_writable, save_final
    from zoo.registry import create, get_variant
    from zoo.resuming import inherited
    from zoo.training import TrainConfig, Trainer, seed_everything

    variant = get_variant(args.variant)
    overrides = dict(parse_override(item, variant.config_class) for item in args.overrides)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "precision": args.precision, "checkpoint_every": args.checkpoint_every,
             "collective_timeout": args.collective_timeout}
    settings = {**(inherited(args.out / "checkpoints" / STATE_NAME) if args.resume else {}),
                **{k: v for k, v in given.items() if v is not None}}
    checkpoints = args.checkpoint_every is not None or args.resume
    logs = {"log_dir": str(args.out / "logs"), "log_every": args.log_every} if args.log_every is not None else {}
    config = replace_config(TrainConfig(), {"device": args.device, "max_steps": args.max_steps, "compile": args.compile,
                                            **({"finite_check": args.finite_check} if args.finite_check else {}),
                                            "progress": not args.no_progress, **settings, **logs,
                                            "checkpoint_dir": str(args.out / "checkpoints") if checkpoints else None},
                            source="train settings")  # checked before anything runs
    seed_everything(config.seed)  # the initial weights too: the same command makes the same model
    model = create(variant.name, **overrides)
    trainer = Trainer(model, config)
    if not trainer.world.is_main:
        trainer.fit(args.data, resume=args.resume)
        trainer.world.barrier()  # rank 0 writes the folder; tear the process group down together
        return
    with FolderLock(args.out):
        check_writable(args.out, model)
        result = trainer.fit(args.data, resume=args.resume)
        card, metrics, where = _trained_card(args, variant, trainer, result, overrides)
        kept = f"The last training checkpoint, in {args.out / 'checkpoints'}, holds the weights of its step." \
            if checkpoints else ""
        save_final(model, args.out, card=card, hint=kept)
    trainer.world.barrier()  # the other processes wait for the writes above before they exit
    print(f"wrote {args.out}/ (config.json, model.safetensors, README.md)")
    if metrics:
        print(f"{where}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def _trained_card(args: argparse.Namespace, variant: Any, trainer: Any, result: Any,
                  overrides: dict[str, Any]) -> tuple[str, dict[str, float], str]:
    """(model card, metrics, where they were measured) of a `zoo train` run."""
    from zoo.cards import render_card
    from zoo.data import DATASETS, as_data
    from zoo.resuming import describe as describe_resume
    from zoo.training import evaluate_loss

    model = trainer.model
    named = args.data in DATASETS
    metrics: dict[str, float] = {}
    if named:
        test = as_data(args.data, model.config.input_shape, split="test").to(trainer.device)
        metrics = evaluate_loss(variant, model, test)
    else:
        metrics = result.history[-1] if result.history else {}  # --max-steps 0: nothing trained, nothing measured
    command = "zoo " + " ".join(shlex.quote(a) for a in args.argv)
    cfg = trainer.config  # what the run used: on --resume, the checkpoint's settings where none were given
    resumed = "" if result.resumed_from is None else f", {describe_resume(result.resumed_from, result.resume_changes)}"
    card = render_card(
        model, title=f"{variant.name} trained on {args.data}",
        summary=f"A `{variant.name}` trained with `zoo train` for {cfg.epochs} epochs "
                f"({result.steps} steps){resumed}.",
        dataset=str(args.data), command=command,
        metrics=metrics, split="test" if named else "last training epoch",
        training={"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                  "steps": result.steps, "precision": cfg.precision, "processes": trainer.world.size,
                  **({"skipped_steps": result.skipped_steps} if cfg.precision == "fp16" else {}),
                  "overrides": overrides or "none"})
    return card, metrics, "test" if named else "train (last epoch)"


def cmd_finetune(args: argparse.Namespace) -> None:
    """Fine-tune; under torchrun every process trains and rank 0 alone writes OUT and prints the report."""
    from zoo.config import parse_override
    from zoo.distributed import env_rank
    from zoo.finetuning import finetune
    from zoo.registry import get_variant

    main_process = env_rank() == 0
    checkpoints = args.resume or args.checkpoint_every is not None
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "device": args.device, "max_steps": args.max_steps, "patience": args.patience,
               "checkpoint_every": args.checkpoint_every, "val_fraction": args.val_fraction,
               "nll_samples": args.nll_samples if main_process else 0, "precision": args.precision,
               "checkpoint_dir": str(args.out / "checkpoints") if checkpoints else None,
               "log_dir": str(args.out / "logs") if args.log_every is not None else None, "log_every": args.log_every,
               "collective_timeout": args.collective_timeout, "crop_size": args.crop_size, "compile": args.compile,
               "finite_check": args.finite_check}
    parent = load_any(args.name)
    config_class = get_variant(parent.variant_name).config_class
    overrides = dict(parse_override(item, config_class) for item in args.overrides)
    result = finetune(parent, args.data, out=args.out if main_process else None, freeze=args.freeze,
                      reset_head=args.reset_head, config_overrides=overrides, resume=args.resume,
                      progress=not args.no_progress, command="zoo " + shlex.join(args.argv),
                      **{k: v for k, v in options.items() if v is not None})
    if main_process:
        print(result.report())


def cmd_export(args: argparse.Namespace) -> None:
    """``save_pretrained(OUT, format=...)`` of a loaded model, with its card (provenance) beside the files."""
    model = load_any(args.model)
    folder = model.pretrained_info.get("path")
    card = Path(folder) / "README.md" if folder else None
    model.save_pretrained(args.out, format=args.format,
                          card=card.read_text() if card is not None and card.is_file() else None)
    print(f"wrote {args.out}/ in {args.format}'s layout: " + ", ".join(sorted(p.name for p in args.out.iterdir())))


def cmd_eval(args: argparse.Namespace) -> None:
    from zoo.data import as_data
    from zoo.evaluation import evaluate

    if args.nll_samples < 0:
        raise ZooError(f"--nll-samples must be at least 0 (0 skips the NLL), got {args.nll_samples}")
    model = load_any(args.model)
    dataset = args.data or _card_dataset(model) or "mnist"
    data = as_data(dataset, model.config.input_shape, split=args.split)
    metrics = evaluate(model, data, nll_samples=args.nll_samples, dataset=dataset, elbo_samples=args.elbo_samples)
    check_finite_metrics(metrics, f"the evaluation of {args.model} on {dataset} ({args.split})")
    if args.report is not None:
        from zoo.report import write_report

        report = write_report(model, data, args.report, title=args.model, dataset=dataset, metrics=metrics)
        print(f"wrote {report}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    print(f"{args.model} on {dataset} ({args.split}, {len(data)} examples):")
    width = max(map(len, metrics))
    for key, value in metrics.items():
        print(f"  {key:<{width}} {value:.4f}" if isinstance(value, float) else f"  {key:<{width}} {value}")


def check_finite_metrics(metrics: dict[str, Any], what: str) -> None:
    """A ZooError naming the NaN or infinite metrics: printed as results with exit code 0 they would pass
    for a measurement."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise ZooError(f"{what} gave non-finite metrics ({', '.join(f'{k}={v}' for k, v in bad.items())}): the "
                       f"model's weights or outputs hold NaN or inf (a diverged training?), or the data does; "
                       f"retrain or check the data")


def _card_dataset(model: Any) -> str | None:
    """The first dataset named in the model card's front matter, if the folder has a card."""
    folder = model.pretrained_info.get("path")
    card = Path(folder) / "README.md" if folder else None
    if card is None or not card.is_file():
        return None
    from zoo.cards import front_matter

    return (front_matter(card).get("datasets") or [None])[0]


def cmd_push(args: argparse.Namespace) -> None:
    from zoo.hub import push_folder

    info = push_folder(args.folder, args.repo_id, revision=args.revision, private=args.private or None,
                       commit_message=args.commit_message, endpoint=args.endpoint)
    print(f"pushed {args.folder} to {args.repo_id}: commit {info.oid} ({info.commit_url})")


def cmd_fetch(args: argparse.Namespace) -> None:
    from zoo import hub
    from zoo.registry import get_checkpoint

    if args.name.startswith(hub.HUB_PREFIX):
        repo_id, revision, subfolder = hub.parse_hub_name(args.name)
    else:
        ref = get_checkpoint(args.name)
        if ref.hub_repo is None:
            raise ZooError(f"checkpoint {args.name!r} is bundled with its plugin ({ref.folder}) and not "
                           f"published on the Hub: nothing to fetch")
        repo_id, revision, subfolder = ref.hub_repo, ref.revision, None
    revision = args.revision or revision
    if hub.is_offline():  # nothing to download: report what the cache holds (or the way out)
        res = hub.resolve(repo_id, revision, subfolder=subfolder)
    else:  # always ask the Hub, so a branch name (main) moves to its newest commit instead of the cached one
        res = hub.HubResolution()
        res.folder = hub.download(repo_id, revision, cache_dir=None, res=res, force=args.force, subfolder=subfolder)
        res.commit = hub.commit_of(res.folder, subfolder)
    print(f"{repo_id}@{res.commit}: {res.folder}")


def load_any(name: str, **kwargs: Any) -> Any:
    """A folder path or a checkpoint name / prefixed reference."""
    from zoo.registry import LOCAL_PREFIX, load

    return load(f"{LOCAL_PREFIX}{name}" if Path(name).is_dir() else name, **kwargs)


def cmd_sample(args: argparse.Namespace) -> None:
    from zoo.pictures import prior_samples, save_grid
    from zoo.registry import get_variant

    if args.n < 1:
        raise ZooError(f"--n must be at least 1, got {args.n}: the number of samples to draw (e.g. --n 64)")
    if not 0 <= args.seed < 2**63:
        raise ZooError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    model = load_any(args.model)
    variant = get_variant(model.variant_name)
    if args.sampler is not None:
        if args.label is not None:
            raise ZooError(f"--sampler {args.sampler} draws codes without labels: drop --label")
        images = prior_samples(model, args.n, seed=args.seed, sampler=args.sampler)
        print(f"wrote {save_grid(images, args.out)} ({args.n} samples through the {args.sampler!r} sampler)")
        return
    if not variant.conditional and args.label is not None:
        raise ZooError(f"{args.model} is an unconditional {variant.name!r} model: --label applies to conditional "
                       f"variants (cvae); drop --label to sample from its prior")
    if variant.conditional and args.label is None:
        classes = model.num_classes
        raise ZooError(f"{args.model} is a conditional {variant.name!r} model: pass --label K"
                       f"{f' (0..{classes - 1})' if classes else ''} to choose the class to generate")
    try:
        images = prior_samples(model, args.n, y=args.label, seed=args.seed)
    except (NotImplementedError, ValueError) as err:  # not generative; a label out of range
        raise ZooError(str(err)) from err
    path = save_grid(images, args.out)
    print(f"wrote {path} ({args.n} samples{'' if args.label is None else f' of class {args.label}'})")


def cmd_fit_sampler(args: argparse.Namespace) -> None:
    from zoo.config import parse_override
    from zoo.samplers import describe, get_sampler

    sampler = get_sampler(args.sampler)
    settings = dict(parse_override(item, sampler.config_class) for item in args.overrides)
    model = load_any(args.model)
    fitted = model.fit_sampler(args.sampler, str(args.data) if Path(args.data).is_dir() else args.data,
                               seed=args.seed, **settings)
    model.save_pretrained(args.out)
    print(f"fitted {describe(fitted.record)}; saved the model with it to {args.out}")
    print(f"sample it with: zoo sample {args.out} --sampler {args.sampler}")


def cmd_experiment(args: argparse.Namespace) -> None:
    from zoo.experiments import EXPERIMENTS, claim, run_experiment, write_index

    if args.name == "list":
        for name in EXPERIMENTS:
            print(f"{name:<22} {claim(name)}")
        return
    for name in EXPERIMENTS if args.name == "all" else [args.name]:
        result = run_experiment(name, args.out, quick=args.quick)
        print(f"{result.name}: {result.claim_verdict}. {result.verdict}")
        print(f"wrote {args.out / result.name}/README.md", flush=True)
    print(f"index: {write_index(args.out)}")


def cmd_explore(args: argparse.Namespace) -> None:
    if args.space is not None:
        from zoo.explore.space import write_space

        folder = write_space(args.name, args.space, data=args.data)
        print(f"wrote the Space {folder} (app.py, requirements.txt, README.md); try it with: cd {folder} && "
              f"python app.py")
        return
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ZooError("zoo explore needs Gradio: pip install 'ae-zoo[explore]'")
    from zoo.explore.serve import serve

    serve(args.name, host=args.host, port=args.port, share=args.share, device=args.device, data=args.data)


if __name__ == "__main__":
    raise SystemExit(entry_point())
