"""How fast ``zoo explore`` answers a slider move, against a bare ``model.decode`` of the same code.

    python benchmarks/bench_explore.py           # writes benchmarks/results/bench_explore.json and the
                                                 # explore section of docs/benchmarks.md, prints a table
    python benchmarks/bench_explore.py --quick   # fewer repetitions (a smoke run)

For each MNIST checkpoint, starting from the code of a test digit, each repetition moves the most informative
slider to a new value and times, alternating, in this process:

- **bare decode**: ``model.decode(z)`` of that one code under ``torch.inference_mode()``, eval mode;
- **slider callback**: ``Explorer.decode_sliders`` (what the page's slider event runs: the values and the
  starting code checked, the shown units set, the decode, the picture as uint8 pixels);

and then, through the page itself: ``zoo explore`` serving in a subprocess on 127.0.0.1, in a session that has
drawn the digit (``/load_model`` and ``/reconstruct`` through ``gradio_client``), slider values are posted to
the page's HTTP API ``/gradio_api/call/decode_sliders`` and the answer's event stream is read to its end
(**round trip**: the queue, the checks, the decode, the PNG written, the answer streamed back; the browser's
download and drawing of the PNG are not in it; ``gradio_client.predict`` adds polling of its own, so it is
not what is timed). The issue's target: a slider move
answered in under 100 ms for the MNIST models on this CPU. Medians over the repetitions; the ratios are
callback / bare and round trip / bare.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from common import machine, median, publish

from zoo.explore.explorer import MAX_SLIDERS, Explorer, Explorers

HERE = Path(__file__).resolve().parent
MODELS = ("vae-mnist", "vae-mnist-2d", "cvae-mnist", "vae-gan-mnist", "ae-mnist", "vq-vae-mnist")
TARGET_MS = 100.0
#: Moves timed before the measured ones (caches, allocator, first PNG writes).
WARMUP = 10


def values_for(explorer: Explorer, code: torch.Tensor, step: int) -> list[float]:
    """The starting code's slider values with the first moved to a new place in its range each step."""
    values = explorer.slider_values(code)
    slider = explorer.sliders(code)[0]
    values[0] = slider.low + (slider.high - slider.low) * ((step * 0.37) % 1.0)
    return values


def digit(explorer: Explorer) -> np.ndarray:
    """Test digit 7 as the page sends a drawing: uint8 pixels."""
    return (explorer.data.x[7, 0].numpy() * 255).round().astype(np.uint8)


def in_process(name: str, repeats: int) -> dict[str, float]:
    """Median ms of the bare decode and of the slider callback, alternating, and their ratio."""
    explorer = Explorers("cpu").get(name)
    label = 3 if explorer.num_classes else None
    code = explorer.reconstruct(digit(explorer), label).code
    y = None if label is None else torch.tensor([label])
    bare, callback = [], []
    for step in range(repeats + WARMUP):
        values = values_for(explorer, code, step)
        z = code.clone()
        z[(0, explorer.units[0], *explorer.position)] = values[0]
        start = time.perf_counter()
        with torch.inference_mode():
            explorer.model.decode(z) if y is None else explorer.model.decode(z, y)
        middle = time.perf_counter()
        explorer.decode_sliders(code, values, label)
        end = time.perf_counter()
        if step >= WARMUP:
            bare.append((middle - start) * 1e3)
            callback.append((end - middle) * 1e3)
    return {"bare_ms": median(bare), "callback_ms": median(callback),
            "callback_ratio": median(callback) / median(bare)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port: int, api_name: str, data: list[object], session_hash: str) -> str:
    """One request to the page's HTTP API in a session, as the page sends it; the event stream's text."""
    post = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/call/{api_name}",
                                  json.dumps({"data": data, "session_hash": session_hash}).encode(),
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=60) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/call/{api_name}/{event_id}",
                                timeout=60) as response:
        return response.read().decode()


def round_trips(names: tuple[str, ...], repeats: int, threads: int) -> dict[str, float]:
    """Median ms of a slider move through ``zoo explore`` (a subprocess on loopback, ``threads`` torch
    threads), per model."""
    import gradio_client
    from PIL import Image

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "zoo", "explore", names[0], "--port", str(port)],
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            if "http://127.0.0.1" in line:
                break
        else:
            raise RuntimeError("zoo explore did not start")
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        explorers, out = Explorers("cpu"), {}
        with tempfile.TemporaryDirectory() as folder:
            for name in names:
                explorer = explorers.get(name)
                label = 3 if explorer.num_classes else None
                png = Path(folder) / f"{name}.png"
                Image.fromarray(digit(explorer)).save(png)
                editor = {"background": gradio_client.handle_file(png), "layers": [],
                          "composite": gradio_client.handle_file(png)}
                client.predict(name, api_name="/load_model")  # the page's session now shows this model
                client.predict(name, label, editor, api_name="/reconstruct")  # ... and has drawn the digit
                code = explorer.reconstruct(digit(explorer), label).code
                times = []
                for step in range(repeats + WARMUP):
                    values = values_for(explorer, code, step)
                    values += [0.0] * (MAX_SLIDERS - len(values))  # the hidden sliders' values
                    start = time.perf_counter()
                    answer = call(port, "decode_sliders", [name, label, *values], client.session_hash)
                    if step >= WARMUP:
                        times.append((time.perf_counter() - start) * 1e3)
                    if not answer.startswith("event: complete"):
                        raise RuntimeError(f"/decode_sliders of {name} failed: {answer[:300]}")
                out[name] = median(times)
        return out
    finally:
        server.terminate()
        server.wait(30)


def markdown(result: dict) -> str:
    rows = "\n".join(
        f"| `{name}` | {r['bare_ms']:.3f} | {r['callback_ms']:.3f} | {r['callback_ratio']:.2f}x | "
        f"{r['round_trip_ms']:.1f} | {r['round_trip_ms'] / r['bare_ms']:.0f}x | "
        f"{'yes' if r['round_trip_ms'] < TARGET_MS else 'NO'} |"
        for name, r in result["models"].items())
    return f"""## `zoo explore`: a slider move against a bare decode

Machine: {result['machine']}. Produced by `python benchmarks/bench_explore.py` (medians of {result['repeats']}
moves of the most informative slider from a test digit's code; raw numbers in
`benchmarks/results/bench_explore.json`; `--threads 2` for two torch threads). Bare: `model.decode(z)` of one
code under `torch.inference_mode()`. Callback: `Explorer.decode_sliders`, what the page's slider event runs
(checks, decode, uint8 picture).
Round trip ({result['repeats'] // 2} moves per model): `/gradio_api/call/decode_sliders` posted to `zoo explore`
serving on 127.0.0.1 in another process, in a session that has drawn the digit, until the answer's event
stream ends (queue, PNG written, answer streamed back; the browser's download and drawing are not in it).
Load average while it ran: {result['load']}.
Target: under {TARGET_MS:.0f} ms.

| model | bare decode (ms) | slider callback (ms) | callback / bare | round trip (ms) | round trip / bare | \
under {TARGET_MS:.0f} ms |
| --- | --- | --- | --- | --- | --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads here and in the server (default 1: one image's decode gains nothing "
                             "from more, and on a shared machine a second thread waits for a busy core)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_explore.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 20 if args.quick else 200
    models = {name: in_process(name, repeats) for name in MODELS}
    for name, ms in round_trips(MODELS, repeats // 2, args.threads).items():
        models[name]["round_trip_ms"] = ms
    result = {"machine": f"{machine(os.cpu_count() or 1)}, {args.threads} torch threads", "quick": args.quick,
              "repeats": repeats, "load": " / ".join(f"{v:.1f}" for v in os.getloadavg()), "models": models}
    publish(result, args.out, markdown(result), "explore", args.quick)


if __name__ == "__main__":
    main()
