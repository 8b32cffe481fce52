"""``zoo explore`` as a server (no browser): it binds loopback only, prints its URL, makes no request beyond
loopback, answers malformed API requests with a message and keeps serving; ``--space`` writes a folder whose
``app.py`` serves the same page. The servers run in subprocesses under the suite's network guard
(:mod:`explore_server`)."""

from __future__ import annotations

import io
import json
import math
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from explore_server import ExploreServer, free_port, listening_addresses
from PIL import Image

from zoo import __version__
from zoo.cards import front_matter
from zoo.cli import main
from zoo.explore.explorer import MAX_SLIDERS, Explorers
from zoo.explore.serve import is_loopback
from zoo.explore.space import write_space

gradio_client = pytest.importorskip("gradio_client", reason="the explorer's tests need the dev extra (gradio)")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ExploreServer:
    """``zoo explore vae-mnist-2d``, with GRADIO_SERVER_NAME=0.0.0.0 in its environment (which must not
    widen what it binds)."""
    folder = tmp_path_factory.mktemp("explore-server")
    process = ExploreServer(["zoo", "explore", "vae-mnist-2d", "--port", str(free_port())], folder,
                            env={"GRADIO_SERVER_NAME": "0.0.0.0"}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ExploreServer) -> gradio_client.Client:
    return gradio_client.Client(server.url + "/", verbose=False, download_files=False)


def test_the_server_prints_its_url_and_binds_loopback_only(server: ExploreServer) -> None:
    assert f"zoo explore: vae-mnist-2d on cpu at {server.url}/" in server.log()
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("reads the listening sockets from /proc/net/tcp (Linux)")
    addresses = listening_addresses(server.port)
    assert addresses == {"127.0.0.1"}, f"listening on {addresses}"
    with urllib.request.urlopen(server.url + "/", timeout=30) as page:
        assert page.status == 200 and b"ae-zoo explorer" in page.read()


def call(url: str, api_name: str, data: list[object]) -> tuple[str, dict]:
    """Post ``data`` to the page's ``/gradio_api/call/API_NAME`` (NaN written as JSON's NaN) and read the
    result from its event stream: ("complete", ...) or ("error", {"error": message, ...})."""
    post = urllib.request.Request(f"{url}/gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/{api_name}/{event_id}", timeout=60) as response:
        stream = response.read().decode()
    event = stream.split("event: ", 1)[1].split("\n", 1)[0]
    payload = json.loads(stream.split("data: ", 1)[1].split("\n", 1)[0])
    return event, payload


def samples_of(client: gradio_client.Client, seed: int) -> np.ndarray:
    """The page's samples picture for ``seed``, fetched from the server as the browser would."""
    result = client.predict("vae-mnist-2d", None, seed, api_name="/samples")
    with urllib.request.urlopen(result["url"], timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())))


def test_malformed_requests_get_a_message_and_the_server_goes_on(server: ExploreServer, client, tmp_path) -> None:
    """An unknown model, a NaN slider value and an image of the wrong size, posted to the page's API, each get
    the explorer's message back (not a stack trace); the server then still answers a good request."""
    with pytest.raises(gradio_client.exceptions.AppError, match="unknown checkpoint 'vae-mnistt'. Did you mean"):
        client.predict("vae-mnistt", api_name="/load_model")
    values = [0.5, math.nan] + [0.0] * (MAX_SLIDERS - 2)  # JSON's NaN: gradio_client refuses to send it
    event, answer = call(server.url, "decode_sliders", ["vae-mnist-2d", None, *values])
    assert (event, answer["error"]) == ("error", "slider 2 must be a finite number, got nan")
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 100), dtype=np.uint8)).save(wide)
    editor = {"background": gradio_client.handle_file(wide), "layers": [],
              "composite": gradio_client.handle_file(wide)}
    with pytest.raises(gradio_client.exceptions.AppError, match="the image is 100x30 pixels .* aspect ratio"):
        client.predict("vae-mnist-2d", None, editor, api_name="/reconstruct")
    assert server.alive()
    expected = Explorers("cpu").get("vae-mnist-2d").samples(0)
    assert np.array_equal(samples_of(client, 0), expected)
    assert "Traceback" not in server.log()
    assert server.blocked == [], f"the server tried to reach beyond loopback: {server.blocked}"


def test_an_unknown_name_fails_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "vae-mnistt", "--port", str(free_port())]) == 2
    assert "unknown checkpoint 'vae-mnistt'" in capsys.readouterr().err


def test_only_loopback_counts_as_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_the_space_folder_serves_the_page(tmp_path: Path) -> None:
    """``--space`` writes app.py, requirements.txt and a README whose front matter runs it on Spaces; starting
    that app.py serves the page, whose samples are the model's."""
    space = tmp_path / "space"
    assert main(["explore", "vae-mnist-2d", "--space", str(space)]) == 0
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    meta = front_matter(space / "README.md")
    import gradio

    assert (meta["sdk"], meta["sdk_version"], meta["app_file"]) == ("gradio", gradio.__version__, "app.py")
    assert "ae-zoo" in meta["tags"] and len(meta["short_description"]) <= 60
    assert (space / "requirements.txt").read_text() == f"ae-zoo[explore]=={__version__}\n"

    process = ExploreServer([str(space / "app.py")], tmp_path, env={"GRADIO_SERVER_PORT": str(free_port())},
                            cwd=space).start()
    try:
        client = gradio_client.Client(process.url + "/", verbose=False, download_files=False)
        picture = samples_of(client, 5)
        expected = Explorers("cpu").get("vae-mnist-2d").samples(5)
        assert np.array_equal(picture, expected)
        if Path("/proc/net/tcp").is_file():  # Linux: the Space's app binds loopback only too
            assert listening_addresses(process.port) == {"127.0.0.1"}
        assert process.blocked == []
    finally:
        process.stop()


def test_a_space_of_a_folder_carries_the_weights(tmp_path: Path) -> None:
    folder = ROOT / "model_cards" / "vae-mnist"
    space = write_space(str(folder), tmp_path / "space")
    assert sorted(p.name for p in (space / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (space / "model" / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert "local-dir:" in (space / "app.py").read_text()
    with pytest.raises(Exception, match="not an empty folder"):
        write_space("vae-mnist", space)


def test_the_page_answers_errors_as_messages_and_runs_in_inference_mode() -> None:
    """Every event runs under torch.inference_mode(); a bad request shows its own message, anything else its
    type and message, never a traceback."""
    import gradio as gr
    import torch

    from zoo.explore.app import answer
    from zoo.explore.checks import RequestError

    assert answer(torch.is_inference_mode_enabled)() is True
    def refuse() -> None:
        raise RequestError("the seed must be a whole number from 0 to 9, got -1")

    with pytest.raises(gr.Error) as bad_request:
        answer(refuse)()
    assert bad_request.value.message == "the seed must be a whole number from 0 to 9, got -1"
    with pytest.raises(gr.Error) as bug:
        answer(lambda: 1 / 0)()
    assert bug.value.message == "the request failed: ZeroDivisionError: division by zero"
