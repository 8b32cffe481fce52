"""The explorer's page in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is downloaded) against ``zoo explore vae-mnist-2d`` in a subprocess.

One server and one browser page for the module; the tests run in order on that page, as a user would: draw,
move a slider, click the manifold, interpolate, switch to ``cvae-mnist`` and ask for sevens, send bad input.
Pictures are compared by their pixels, fetched from the server, against the model run here. Every request
the page makes beyond loopback is refused and recorded (none is allowed). Screenshots of each state go to
``$ZOO_EXPLORE_SCREENSHOTS`` when set (``docs/explore`` holds the committed ones), else to a temporary folder.

Without Chromium the module is skipped with how to install it (``apt-get install chromium`` on Debian and
Ubuntu, or ``ZOO_CHROMIUM=/path/to/chrome``); ``.ci/run`` installs it and sets ``ZOO_REQUIRE_BROWSER=1``, so in
CI the tests run, and a missing browser fails them instead of skipping.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from explore_server import ExploreServer, free_port
from netguard import is_loopback_host
from PIL import Image

import zoo
from zoo.classifier import classify
from zoo.explore.explorer import MANIFOLD_N, SAMPLES, SAMPLES_PER_ROW, Explorers
from zoo.explore.images import GRID_PADDING

CHROMIUM = Path(os.environ.get("ZOO_CHROMIUM", "/usr/bin/chromium"))
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # only ever the system's browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright: pip install -e "
                                                             "'.[dev]'")
if not CHROMIUM.is_file():
    missing = (f"the browser tests need Chromium at {CHROMIUM}: install it with `sudo apt-get install chromium` "
               f"(Debian, Ubuntu) or point ZOO_CHROMIUM at a Chrome or Chromium executable")
    if os.environ.get("ZOO_REQUIRE_BROWSER"):  # CI (.ci/run) installs it: there a missing browser is a failure
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ZOO_EXPLORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExploreServer]:
    process = ExploreServer(["zoo", "explore", "vae-mnist-2d", "--port", str(free_port())],
                            tmp_path_factory.mktemp("explore-browser")).start()
    yield process
    process.stop()


class Page:
    """The browser page, with what it tried to fetch beyond loopback."""

    def __init__(self, page: object, refused: list[str]) -> None:
        self.page = page
        self.refused = refused


@pytest.fixture(scope="module")
def browser_page(server: ExploreServer) -> Iterator[Page]:
    refused: list[str] = []

    def only_loopback(route: object) -> None:
        if is_loopback_host(urlsplit(route.request.url).hostname or ""):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1350})
        page.set_default_timeout(TIMEOUT * 1000)
        page.route("**/*", only_loopback)
        page.goto(server.url + "/")
        page.wait_for_selector("#card h1:has-text('vae-mnist-2d')")
        yield Page(page, refused)
        browser.close()


@pytest.fixture
def page(browser_page: Page) -> object:
    return browser_page.page


def src(page: object, elem_id: str) -> str | None:
    images = page.locator(f"#{elem_id} img")
    return images.first.get_attribute("src") if images.count() else None


def new_src(page: object, elem_id: str, old: str | None, timeout: float = TIMEOUT) -> str:
    """Wait until the image of ``elem_id`` shows a picture other than ``old`` (its URL names its content)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = src(page, elem_id)
        if current and current != old:
            return current
        time.sleep(0.1)
    raise AssertionError(f"#{elem_id} showed no new picture within {timeout:.0f} s")


def pixels(page: object, url: str) -> np.ndarray:
    """The picture at ``url`` as the server sends it, uint8 (H, W)."""
    picture = Image.open(io.BytesIO(page.request.get(url).body()))
    return np.asarray(picture.convert("L"))


def tile(picture: np.ndarray, index: int, columns: int, size: int, padding: int) -> np.ndarray:
    row, column = divmod(index, columns)
    top, left = padding + row * (size + padding), padding + column * (size + padding)
    return picture[top:top + size, left:left + size]


def click_pixel(page: object, elem_id: str, x: float, y: float) -> None:
    """Click pixel (x, y) of the picture of ``elem_id``, placed as Gradio places it (contained, not enlarged)."""
    image = page.locator(f"#{elem_id} img").first
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    box = image.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1], 1.0)
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + (x + 0.5) * scale, top + (y + 0.5) * scale)


def toast(page: object, text: str) -> object:
    """The error message on the page that contains ``text``, once visible."""
    message = page.locator("[data-testid='toast-text']", has_text=text).first
    message.wait_for(state="visible")
    return message


@torch.no_grad()
def decode(model: torch.nn.Module, z: list[float], label: int | None = None) -> np.ndarray:
    out = model.decode(torch.tensor([z])) if label is None else model.decode(torch.tensor([z]), label)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)[0, 0].numpy()


def settle(page: object) -> None:
    """Wait until no event of the page is queued or running and every picture is drawn (for screenshots of a
    finished state)."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=status-tracker]')]"
                           ".every(tracker => tracker.classList.contains('hide'))"
                           " && [...document.images].filter(image => image.offsetParent !== null)"
                           ".every(image => image.complete)")  # the shown ones: hidden tabs load lazily


def decode_of_the_sliders(page: object, model: torch.nn.Module, timeout: float = TIMEOUT) -> np.ndarray:
    """The picture of ``#moved`` once it is the decode of the values the sliders show (within one grey level).

    The slider events run with ``show_progress="hidden"``, so no status tracker tells :func:`settle` that the
    last one is still being answered: on a loaded machine the picture can lag a press behind the sliders. The
    page is read until the two agree; if they never do, the page does not show the sliders' decode."""
    deadline = time.monotonic() + timeout
    while True:
        z = [float(page.locator(f"#slider-{i} input[type=number]").input_value()) for i in range(2)]
        shown = pixels(page, src(page, "moved"))
        if np.abs(shown.astype(int) - decode(model, z).astype(int)).max() <= 1:
            return shown
        assert time.monotonic() < deadline, f"not the decode of the sliders' values {z} within {timeout:.0f} s"
        time.sleep(0.2)


def test_drawing_a_digit_shows_its_reconstruction(page: object, shots: Path) -> None:
    box = page.locator("#editor canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    loop = [(cx + 50 * math.sin(2 * math.pi * k / 16), cy - 75 * math.cos(2 * math.pi * k / 16)) for k in range(17)]
    page.mouse.move(*loop[0])  # a zero, in one stroke
    page.mouse.down()
    for x, y in loop[1:]:
        page.mouse.move(x, y)
    page.mouse.up()
    seen = pixels(page, new_src(page, "seen", None))  # the empty canvas is not read: the first picture is the zero
    recon = pixels(page, new_src(page, "recon", None))
    assert seen.shape == recon.shape == (28, 28)
    assert (seen > 128).sum() >= 30, "the stroke did not reach the model"
    assert recon.std() > 20, "the reconstruction is flat"
    correlation = np.corrcoef(seen.ravel(), recon.ravel())[0, 1]
    assert correlation > 0.3, f"the reconstruction does not follow the drawing (correlation {correlation:.2f})"
    page.locator("#likelihood", has_text="NLL -log p(x)").wait_for()
    settle(page)
    page.screenshot(path=str(shots / "draw.png"))


def test_moving_a_slider_changes_the_decoded_image(page: object, shots: Path) -> None:
    recon = pixels(page, src(page, "recon"))
    before = src(page, "moved")
    assert np.array_equal(pixels(page, before), recon), "the sliders do not start at the drawing's code"
    settle(page)  # the drawing has just set the sliders: move one once the page is idle
    slider = page.locator("#slider-0 input[type=range]")
    middle = (float(slider.get_attribute("min")) + float(slider.get_attribute("max"))) / 2
    moved = recon
    # A key press that lands while Gradio redraws the slider can be lost, and on a loaded machine a late event of
    # the drawing can set the sliders back to its code after the press: press again (up to three times) until
    # the settled picture has moved away from the reconstruction.
    for _ in range(3):
        key = "Home" if float(slider.input_value()) > middle else "End"  # the end away from the current value
        slider.press(key)  # as a keyboard user would
        try:
            before = new_src(page, "moved", before, timeout=TIMEOUT / 3)
        except AssertionError:
            slider.press("ArrowRight" if key == "Home" else "ArrowLeft")  # one step back: the next press moves it
            continue
        settle(page)  # the picture of the last value, whichever press it came from
        before = src(page, "moved")
        moved = pixels(page, before)
        if np.abs(moved.astype(int) - recon.astype(int)).mean() > 2:
            break
    moved = decode_of_the_sliders(page, zoo.load("vae-mnist-2d"))
    assert np.abs(moved.astype(int) - recon.astype(int)).mean() > 2, "the decoded image hardly changed"
    settle(page)
    page.screenshot(path=str(shots / "slider.png"))


def test_a_click_on_the_manifold_decodes_that_point(page: object, shots: Path) -> None:
    page.get_by_role("tab", name="Map").click()
    manifold = pixels(page, new_src(page, "map", None))
    assert manifold.shape == (MANIFOLD_N * 28, MANIFOLD_N * 28)
    before = src(page, "picked")
    for row, column in [(3, 11), (12, 2)]:
        click_pixel(page, "map", column * 28 + 14, row * 28 + 14)
        before = new_src(page, "picked", before)
        picked = pixels(page, before).astype(int)
        own = np.abs(picked - tile(manifold, row * MANIFOLD_N + column, MANIFOLD_N, 28, 0))
        other = np.abs(picked - tile(manifold, row * MANIFOLD_N + (column + 1) % MANIFOLD_N, MANIFOLD_N, 28, 0))
        assert own.mean() <= 1 and own.max() <= 8, f"the click on tile {row, column} decoded another point"
        assert other.mean() > 3 * own.mean()
        assert page.locator("#caption").inner_text().startswith("z = (")
    settle(page)
    page.screenshot(path=str(shots / "manifold.png"))


def test_interpolating_between_two_test_images(page: object, shots: Path) -> None:
    page.get_by_role("tab", name="Interpolate").click()
    page.locator("#pair").click()
    image_a = pixels(page, new_src(page, "image-a", None))
    page.locator("#interpolate").click()
    linear_src = new_src(page, "strip", None)
    strip = pixels(page, linear_src)
    model = zoo.load("vae-mnist-2d")
    with torch.no_grad():
        recon_a = (model(torch.from_numpy(image_a.copy()).float()[None, None] / 255).clamp(0, 1) * 255).round()
    first = tile(strip, 0, 10, 28, GRID_PADDING).astype(int)
    assert np.abs(first - recon_a[0, 0].numpy().astype(int)).max() <= 1, "the strip does not start at A"
    page.get_by_text("slerp", exact=True).click()
    assert not np.array_equal(pixels(page, new_src(page, "strip", linear_src)), strip)
    settle(page)
    page.screenshot(path=str(shots / "interpolate.png"))


def test_class_seven_on_cvae_gives_sevens(page: object, shots: Path) -> None:
    page.locator("#model input").click()  # the picker lists every installed checkpoint
    options = page.get_by_role("option")
    options.first.wait_for()
    listed = sorted(text.removeprefix("✓").strip() for text in options.all_inner_texts())  # ✓: the model shown
    assert listed == zoo.list_checkpoints()
    page.locator("#model input").fill("cvae-mnist")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card h1:has-text('cvae-mnist')")
    page.get_by_role("tab", name="Samples").click()
    before = new_src(page, "samples", None)  # class 0, drawn when the model loaded
    page.locator("#label input").click()
    page.get_by_role("option", name="7", exact=True).click()
    grid = pixels(page, new_src(page, "samples", before))
    rows = SAMPLES // SAMPLES_PER_ROW
    digits = torch.stack([torch.from_numpy(tile(grid, i, SAMPLES_PER_ROW, 28, GRID_PADDING).copy())
                          for i in range(rows * SAMPLES_PER_ROW)]).float()[:, None] / 255
    predicted = classify(digits)[0].argmax(1)
    assert (predicted == 7).float().mean() > 0.75, f"the classifier read {predicted.tolist()}"
    settle(page)
    page.screenshot(path=str(shots / "cvae-7.png"))


def test_vq_vae_says_what_does_not_apply_and_its_scatter_decodes_a_click(page: object, shots: Path) -> None:
    """A spatial, non-generative model: the notes and the samples tab say what is skipped and why, and a click
    on a point of the scatter of test codes decodes that test image's code."""
    page.locator("#model input").fill("vq-vae-mnist")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card h1:has-text('vq-vae-mnist')")
    notes = page.locator("#notes").inner_text()
    assert "prior samples: skipped, variant vq-vae does not declare generative" in notes
    assert "a unit is a channel" in notes
    page.get_by_role("tab", name="Samples").click()
    assert "does not declare generative" in page.locator("#samples-note").inner_text()
    assert page.locator("#draw-samples").is_disabled()
    page.get_by_role("tab", name="Map").click()
    new_src(page, "map", None)
    explorer = Explorers("cpu").get("vq-vae-mnist")  # the same data, codes and scatter as the server's
    k = 345
    x, y = explorer.scatter._pixel_points[k]
    before = src(page, "picked")
    click_pixel(page, "map", x - 0.5, y - 0.5)
    picked = pixels(page, new_src(page, "picked", before))
    index = int(page.locator("#caption").inner_text().split()[2])
    assert np.hypot(*(explorer.scatter._pixel_points[index] - [x, y])) <= 1.5, "another point than the clicked one"
    with torch.no_grad():
        expected = (explorer.model(explorer.data.x[index:index + 1]).clamp(0, 1) * 255).round()[0, 0].numpy()
    assert np.abs(picked.astype(int) - expected.astype(int)).max() <= 1, "not the decode of that test image's code"
    settle(page)
    page.screenshot(path=str(shots / "vq-vae-scatter.png"))


def test_bad_input_shows_an_error_and_the_page_goes_on(page: object, shots: Path, tmp_path: Path) -> None:
    page.locator("#model input").fill("vae-mnistt")
    page.keyboard.press("Enter")
    assert "Did you mean: vae-mnist" in toast(page, "unknown checkpoint 'vae-mnistt'").inner_text()
    page.wait_for_timeout(600)  # the message fades in
    page.screenshot(path=str(shots / "error.png"))
    page.locator("#model input").fill("vae-mnist-2d")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card h1:has-text('vae-mnist-2d')")
    settle(page)  # the model's page is reset (the canvas too) before the upload
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 100), dtype=np.uint8)).save(wide)
    page.get_by_role("tab", name="Draw and slide").click()
    page.locator("#editor input[type=file]").set_input_files(str(wide))
    assert "aspect ratio" in toast(page, "the image is 100x30 pixels").inner_text()
    assert page.locator("text=Traceback").count() == 0


def test_nothing_left_loopback(browser_page: Page, server: ExploreServer) -> None:
    assert browser_page.refused == [], f"the page fetched {browser_page.refused}"
    assert server.blocked == [], f"the server tried to reach {server.blocked}"
    assert server.alive()
