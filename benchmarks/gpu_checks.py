"""Every GPU check the open issues ask for, as one command for a borrowed GPU machine.

    python benchmarks/gpu_checks.py --out OUT                      # the parts in order, within --budget seconds
    python benchmarks/gpu_checks.py --out OUT dsprites --budget 560   # chosen parts only
    python benchmarks/gpu_checks.py --list                         # the parts, their limits and what they write

A GPU is lent to this project rarely and for minutes (CONTRIBUTING.md, "GPU checks"), so the checks run as one
prepared command: each part in its own process, stopped at its own limit; a part whose limit no longer fits in
what is left of ``--budget`` is skipped, and the log says so. After each part, the files it wrote are copied
into ``OUT``, flat (the device tool brings back at most 8 files, at most two folders down), with
``gpu_checks.log``: the GPU's name, each part's command, exit status, seconds and output. Bring them back into
the repository where the parts would have written them (the log names each file's place) and commit them.

The limits are a part's budget, not a measurement: no part has run on a GPU yet.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Part:
    """One check: its issue, its command (run from the repository root, after this Python), the seconds it
    may take, and the files it writes (repository paths) with the names they get in ``OUT``."""

    issue: int
    command: tuple[str, ...]
    seconds: int
    outputs: tuple[tuple[str, str], ...]


PAGE = ("docs/benchmarks.md", "benchmarks.md")
PARTS = {
    # CUDA graphs (reduce-overhead) against the eager hand loop, data and shuffling on the GPU: issue 19, 3-5.
    "overhead": Part(19, ("benchmarks/bench_overhead.py", "--device", "cuda", "--reps", "1"), 300,
                     (("benchmarks/results/bench_overhead-cuda.json", "bench_overhead-cuda.json"), PAGE)),
    # The SD 1.x VAE at 256 and 512 pixels in bf16: issue 13, item 8.
    "diffusers": Part(13, ("benchmarks/bench_diffusers.py", "--device", "cuda", "--precision", "bf16"), 240,
                      (("benchmarks/results/bench_diffusers_gpu_bf16.json", "bench_diffusers_gpu_bf16.json"),)),
    # The MLP VAE's training, sampling and memory against the hand-written loops: issue 19's GPU rows.
    "train": Part(19, ("benchmarks/bench.py", "--device", "cuda", "--precision", "bf16"), 240,
                  (("benchmarks/results/bench-cuda-bf16.json", "bench-cuda-bf16.json"), PAGE)),
    # beta-VAE disentanglement under the standard budget (420 s of training, then MIG and BCE): issue 17, item 3.
    "dsprites": Part(17, ("-m", "zoo.experiments.standard_dsprites", "--out", "docs/experiments"), 560,
                     (("docs/experiments/beta-disentanglement-standard/README.md", "standard-dsprites-README.md"),
                      ("docs/experiments/beta-disentanglement-standard/results.json",
                       "standard-dsprites-results.json"))),
}


def plan(names: list[str], budget: float) -> list[tuple[str, str | None]]:
    """(part, None) for each part that runs, (part, why not) for each skipped, assuming each takes its whole limit
    (the run itself starts the next part as soon as the last one ends)."""
    left, out = budget, []
    for name in names:
        part = PARTS[name]
        if part.seconds > left:
            out.append((name, f"skipped: its limit is {part.seconds} s and {left:.0f} s of the budget are left"))
        else:
            out.append((name, None))
            left -= part.seconds
    return out


def describe_gpu() -> str:
    """The GPU and the software, for the log's first line (no GPU number means anything without them)."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return f"{gpu}; torch {torch.__version__}; python {sys.version.split()[0]}"


def run_part(name: str, seconds: float, out: Path, log: list[str]) -> None:
    """Run one part with its time limit, append its record to ``log``, and copy what it wrote into ``out``."""
    part = PARTS[name]
    command = [sys.executable, *part.command]
    before = {source: modified(ROOT / source) for source, _ in part.outputs}
    log.append(f"## {name} (issue {part.issue}): {' '.join(part.command)} (limit {seconds:.0f} s)")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds)
        status, output = f"exit status {done.returncode}", done.stdout + done.stderr
    except subprocess.TimeoutExpired as stopped:
        status = f"stopped at its limit of {seconds:.0f} s"
        output = "".join(o.decode() if isinstance(o, bytes) else (o or "") for o in (stopped.stdout, stopped.stderr))
    log.append(f"{status} after {time.perf_counter() - start:.0f} s")
    for source, target in part.outputs:
        if modified(ROOT / source) != before[source]:  # written by this part, not left from before
            shutil.copyfile(ROOT / source, out / target)
            log.append(f"wrote {source} (in OUT as {target})")
    log += ["```", output.rstrip()[-20_000:], "```", ""]


def modified(path: Path) -> int | None:
    """The file's modification time in nanoseconds, None when it does not exist."""
    return path.stat().st_mtime_ns if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=list(PARTS),
                        help=f"the parts to run, in this order (default: {' '.join(PARTS)})")
    parser.add_argument("--out", type=Path, help="where the results and gpu_checks.log go ($OUT on the device)")
    parser.add_argument("--budget", type=float, default=560.0,
                        help="seconds for all parts together (default 560: one device call of at most 10 minutes)")
    parser.add_argument("--list", action="store_true", help="list the parts and stop")
    args = parser.parse_args()
    if args.list:
        for name, part in PARTS.items():
            written = ", ".join(source for source, _ in part.outputs)
            print(f"{name}: issue {part.issue}, limit {part.seconds} s, writes {written}")
        return
    unknown = [name for name in args.parts if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: the parts are {', '.join(PARTS)}")
    if args.out is None:
        parser.error("--out is required (where the results go)")
    args.out.mkdir(parents=True, exist_ok=True)
    log = [f"# GPU checks: {describe_gpu()}", ""]
    deadline = time.perf_counter() + args.budget
    for name, skipped in plan(args.parts, args.budget):
        if skipped:
            log += [f"## {name} (issue {PARTS[name].issue}): {skipped}", ""]
        else:
            run_part(name, min(PARTS[name].seconds, deadline - time.perf_counter()), args.out, log)
        (args.out / "gpu_checks.log").write_text("\n".join(log) + "\n")  # after each part: a later one may hang
    print("\n".join(log))


if __name__ == "__main__":
    main()
