"""``zoo`` run as 2 gloo processes under torchrun, for the distributed tests (CPU, no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

# `python -m zoo ARGS` (zoo.cli.main), run in the folder rankN/ of its own so that anything a process
# other than rank 0 writes under a relative --out shows up there, and with each process's final
# weights dumped to DUMP/rankN.safetensors.
SCRIPT = """
import os, sys, time
from safetensors.torch import save_file
import zoo.training
from zoo.cli import main
from zoo.distributed import end_process

rank, dump = int(os.environ["RANK"]), sys.argv[1]
os.makedirs(f"rank{rank}", exist_ok=True)
os.chdir(f"rank{rank}")
fit = zoo.training.Trainer.fit

def fit_and_dump(self, *args, **kwargs):
    result = fit(self, *args, **kwargs)
    save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, f"{dump}/rank{rank}.safetensors")
    return result

zoo.training.Trainer.fit = fit_and_dump
try:
    code = main(sys.argv[2:])
finally:  # when this process left zoo's main (after the closing barrier)
    with open(f"{dump}/rank{rank}.left", "w") as f:
        f.write(repr(time.time()))
raise SystemExit(end_process(code))  # as `python -m zoo` ends
"""

def torchrun(workdir: Path, args: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """Run ``zoo ARGS`` as 2 gloo processes in ``workdir``: (rank 0's weights, rank 1's, stdout)."""
    workdir.mkdir(parents=True, exist_ok=True)
    script, dump = workdir / "zoo_main.py", workdir / "dump"
    script.write_text(SCRIPT)
    dump.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "--monitor-interval", "0.1"]
    run = subprocess.run([*torchrun, str(script), str(dump), *args], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors")), run.stdout
