"""The Gradio page of ``zoo explore``: layout and wiring only; every answer comes from
:class:`zoo.explore.explorer.Explorer`.

Each event's function is wrapped by :func:`answer`: it runs under ``torch.inference_mode()``, and any
error becomes a ``gr.Error`` whose message the page shows (a bad request names what was wrong; anything
else names its type), so the browser never sees a stack trace and the server keeps answering. Events have
API names (``/reconstruct``, ``/decode_sliders``, ...), so the page's answers can also be asked for over
HTTP, with the same checks.

The sliders, the reconstruction and the likelihood are separate events: a slider move is answered at once
(decode only) even while the importance-sampled NLL of a drawing is being computed.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # Gradio reports usage to its servers otherwise

import gradio as gr  # noqa: E402  (after the variable above, which Gradio reads at import)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from zoo.contract import skip_note  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.explore.checks import finite_values  # noqa: E402
from zoo.explore.explorer import (  # noqa: E402
    MAX_SLIDERS,
    NLL_SAMPLES,
    SAMPLES,
    Explorer,
    Explorers,
    card_text,
)

log = logging.getLogger(__name__)

#: System fonts only: Gradio's default theme loads its fonts from Google, a request to the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
#: Model images are small (28x28): the page scales them up without smoothing.
CSS = ".pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
#: Side of the drawing canvas and of the shown images, in screen pixels (about).
CANVAS, SHOWN = 280, 196


def answer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``torch.inference_mode()``, its errors turned into messages the page shows."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with torch.inference_mode():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ZooError, ValueError, LookupError, NotImplementedError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # a bug or a broken model: logged with its traceback, named on the page
            log.exception("zoo explore: %s failed", fn.__name__)
            raise gr.Error(f"the request failed: {type(err).__name__}: {err}", print_exception=False) from None
    return run


def _canvas(explorer: Explorer) -> tuple[dict[str, Any], tuple[int, int], gr.Brush]:
    """An empty canvas the colour of the data's background, its size, and a brush of the other colour."""
    _, height, width = explorer.input_shape
    scale = max(1, round(CANVAS / max(height, width)))
    dark = explorer.background is not None and explorer.background < 0.5
    paper = np.full((height * scale, width * scale), 0 if dark else 255, dtype=np.uint8)
    ink = "#ffffff" if dark else "#000000"
    brush = gr.Brush(colors=[ink], default_color=ink, color_mode="fixed", default_size=max(2, round(1.3 * scale)))
    return {"background": paper, "layers": [], "composite": paper}, (width * scale, height * scale), brush


def _start_from(explorer: Explorer, start: torch.Tensor, label: Any) -> tuple[Any, ...]:
    """The sliders' new starting code, its decode, and the sliders set to its values."""
    return (start, explorer.decode_sliders(start, explorer.slider_values(start), label),
            *_slider_updates(explorer, start))


def _slider_updates(explorer: Explorer, code: torch.Tensor | None) -> list[Any]:
    """Updates of the ``MAX_SLIDERS`` slider components for a starting code (None: before any, the centres of
    their ranges): shown ones set to the code's values with their range and caption, the others hidden."""
    sliders = explorer.sliders(code)
    values = explorer.slider_values(code) if code is not None else [float(explorer.centre[s.unit]) for s in sliders]
    updates = [gr.update(visible=True, label=s.label, minimum=s.low, maximum=s.high, value=v)
               for s, v in zip(sliders, values, strict=True)]
    return updates + [gr.update(visible=False, value=0.0)] * (MAX_SLIDERS - len(sliders))


def build_app(name: str, explorers: Explorers) -> gr.Blocks:
    """The page, opening on model ``name``; models are loaded (and kept) by ``explorers``."""
    from zoo.registry import list_checkpoints

    choices = list_checkpoints()
    if name not in choices:
        choices = [name, *choices]

    with gr.Blocks(title="ae-zoo explorer", analytics_enabled=False) as demo:
        gr.Markdown("# ae-zoo explorer\nDraw or upload an image, move the latent sliders, interpolate, sample, "
                    "and click on the map of the latent space. Models: every installed checkpoint, or type "
                    "`hf-hub:ORG/NAME`, `local-dir:PATH` or a folder.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                model = gr.Dropdown(choices, value=name, label="Model", allow_custom_value=True, elem_id="model")
                label = gr.Dropdown([], value=None, label="Class (conditional model)", visible=False,
                                    elem_id="label")
                notes = gr.Markdown(elem_id="notes")
            with gr.Column(scale=2):
                card = gr.Markdown(label="Model card", max_height=300, container=True, elem_id="card")

        with gr.Tabs():
            with gr.Tab("Draw and slide", id="draw"):
                with gr.Row():
                    editor = gr.ImageEditor(label="Draw, or upload an image", sources=("upload", "clipboard"),
                                            image_mode="RGB", type="numpy", layers=False, transforms=(),
                                            canvas_size=(CANVAS, CANVAS), elem_id="editor", format="png")
                    with gr.Column(min_width=200):
                        seen = _image("What the model reads", "seen")
                        recon = _image("Reconstruction", "recon")
                    with gr.Column(min_width=200):
                        moved = _image("Decoded from the sliders", "moved")
                        adapted = gr.Markdown(elem_id="adapted")
                    with gr.Column(min_width=260):
                        sliders = [gr.Slider(-3, 3, value=0.0, step=0.01, visible=False, elem_id=f"slider-{i}")
                                   for i in range(MAX_SLIDERS)]
                        with gr.Row():
                            point_seed = gr.Number(0, precision=0, label="Seed", min_width=80, elem_id="point-seed")
                            sample_point = gr.Button("Sample a point", elem_id="sample-point")
                            back = gr.Button("Back to the drawing", elem_id="back")
                with gr.Row():
                    chart = gr.Image(label="Posterior", interactive=False, format="png", elem_id="chart")
                    with gr.Column():
                        table = gr.Dataframe(label="Posterior per unit", interactive=False, max_height=260,
                                             elem_id="table")
                        likelihood = gr.Markdown(elem_id="likelihood")
            with gr.Tab("Interpolate", id="interpolate"):
                with gr.Row():
                    image_a = gr.Image(label="Image A", sources=("upload", "clipboard"), type="numpy",
                                       image_mode="RGB", format="png", elem_id="image-a", height=SHOWN,
                                       elem_classes=["pixelated"])
                    image_b = gr.Image(label="Image B", sources=("upload", "clipboard"), type="numpy",
                                       image_mode="RGB", format="png", elem_id="image-b", height=SHOWN,
                                       elem_classes=["pixelated"])
                with gr.Row():
                    method = gr.Radio(["linear", "slerp"], value="linear", label="Interpolation",
                                      elem_id="method")
                    pair_seed = gr.Number(0, precision=0, label="Seed", elem_id="pair-seed")
                    pair = gr.Button("Two test images", elem_id="pair")
                    run_interpolation = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                strip = _image("From A (left) to B (right)", "strip", height=120)
                with gr.Row():
                    t = gr.Slider(0, 1, value=0.5, step=0.01, label="t (0: A, 1: B)", elem_id="t")
                    at_t = _image("Decoded at t", "at-t")
            with gr.Tab("Samples", id="samples"):
                with gr.Row():
                    sample_seed = gr.Number(0, precision=0, label="Seed", elem_id="sample-seed")
                    draw_samples = gr.Button(f"Draw {SAMPLES} samples", variant="primary", elem_id="draw-samples")
                samples_note = gr.Markdown(elem_id="samples-note")
                samples = _image("Prior samples", "samples", height=280)
            with gr.Tab("Map", id="map"):
                map_note = gr.Markdown(elem_id="map-note")
                with gr.Row():
                    # Shown at its own size or smaller: Gradio maps a click to the picture's pixels only for
                    # pictures it does not enlarge.
                    picture = gr.Image(label="Click to decode a point", interactive=False, format="png",
                                       elem_id="map", buttons=["download"])
                    with gr.Column():
                        picked = _image("Decoded at the click", "picked")
                        caption = gr.Markdown(elem_id="caption")

        code = gr.State(None)   # the drawing's code
        base = gr.State(None)   # the sliders' starting code
        codes = gr.State(None)  # the two interpolated codes

        @answer
        def load_model(name: str) -> tuple[Any, ...]:
            explorer = explorers.get(name)
            value, size, brush = _canvas(explorer)
            classes = list(range(explorer.num_classes))
            label_update = gr.update(choices=classes, value=classes[0] if classes else None, visible=bool(classes))
            first = classes[0] if classes else None
            map_text = {"manifold": "The 2-D latent's manifold: decodes of a grid of equal prior mass (z1 to the "
                                    "right, z2 upwards). Click anywhere to decode that point.",
                        "scatter": "Test codes projected on their two principal axes, coloured by label. Click "
                                   "near a point to decode its code.",
                        None: "No map for this model (see the notes)."}[explorer.map_kind]
            return (card_text(explorer.model, explorer.name), _notes(explorer), label_update,
                    gr.update(value=value, canvas_size=size, brush=brush), None, None, None, None, None, "", "",
                    None, None, *_slider_updates(explorer, None), None, None, None,
                    explorer.samples(0, first) if explorer.generative else None, _samples_note(explorer),
                    gr.update(interactive=explorer.generative), explorer.map_picture(first), map_text, None, "")

        load_outputs = [card, notes, label, editor, seen, recon, moved, chart, table, adapted, likelihood, code,
                        base, *sliders, strip, at_t, codes, samples, samples_note, draw_samples, picture, map_note,
                        picked, caption]
        demo.load(load_model, model, load_outputs, api_name=False)
        model.change(load_model, model, load_outputs, api_name="load_model")

        @answer
        def reconstruct(name: str, label: Any, image: Any) -> tuple[Any, ...]:
            if _blank(image):  # an empty canvas (the editor also reports setting its background): nothing to read
                return tuple(gr.skip() for _ in drawn)
            explorer = explorers.get(name)
            reading = explorer.reconstruct(image, label)
            adapted_text = "Adapted: " + "; ".join(reading.notes) + "." if reading.notes else ""
            table_value = {"headers": explorer.table_header(), "data": reading.table}
            # the sliders start at the drawing's code, so their decode is the reconstruction itself
            return (reading.input, reading.reconstruction, reading.reconstruction, reading.chart, table_value,
                    adapted_text, reading.code, reading.code, *_slider_updates(explorer, reading.code))

        @answer
        def measure(name: str, label: Any, image: Any) -> Any:
            return gr.skip() if _blank(image) else explorers.get(name).likelihood(image, label)

        drawn = [seen, recon, moved, chart, table, adapted, code, base, *sliders]
        for event in (editor.input, editor.upload):
            event(reconstruct, [model, label, editor], drawn, api_name="reconstruct" if event == editor.upload
                  else False, trigger_mode="always_last").then(
                measure, [model, label, editor], likelihood, api_name="likelihood" if event == editor.upload
                else False)

        @answer
        def decode_sliders(name: str, label: Any, start: Any, *values: Any) -> np.ndarray:
            explorer = explorers.get(name)
            return explorer.decode_sliders(start, _shown(explorer, values), label)

        for slider in sliders:
            slider.input(decode_sliders, [model, label, base, *sliders], moved, api_name="decode_sliders",
                         trigger_mode="always_last", show_progress="hidden")

        @answer
        def start_at(name: str, label: Any, seed: Any) -> tuple[Any, ...]:
            explorer = explorers.get(name)
            return _start_from(explorer, explorer.sample_point(seed), label)

        sample_point.click(start_at, [model, label, point_seed], [base, moved, *sliders], api_name="sample_point")

        @answer
        def back_to_drawing(name: str, label: Any, drawing: Any) -> tuple[Any, ...]:
            explorer = explorers.get(name)
            return _start_from(explorer, explorer.check_code(drawing), label)

        back.click(back_to_drawing, [model, label, code], [base, moved, *sliders], api_name="back_to_drawing")

        @answer
        def test_pair(name: str, seed: Any) -> tuple[np.ndarray, np.ndarray]:
            return explorers.get(name).test_pair(seed)

        pair.click(test_pair, [model, pair_seed], [image_a, image_b], api_name="test_pair")

        @answer
        def interpolate(name: str, label: Any, a: Any, b: Any, how: str, fraction: Any) -> tuple[Any, ...]:
            explorer = explorers.get(name)
            strip_image, pair_codes = explorer.interpolation(a, b, how, label)
            return strip_image, pair_codes, explorer.interpolate_at(pair_codes, fraction, how, label)

        run_interpolation.click(interpolate, [model, label, image_a, image_b, method, t], [strip, codes, at_t],
                                api_name="interpolate")
        method.input(interpolate, [model, label, image_a, image_b, method, t], [strip, codes, at_t],
                     api_name=False)

        @answer
        def interpolate_at(name: str, label: Any, pair_codes: Any, fraction: Any, how: str) -> np.ndarray:
            return explorers.get(name).interpolate_at(pair_codes, fraction, how, label)

        t.input(interpolate_at, [model, label, codes, t, method], at_t, api_name="interpolate_at",
                trigger_mode="always_last", show_progress="hidden")

        @answer
        def draw(name: str, label: Any, seed: Any) -> np.ndarray:
            return explorers.get(name).samples(seed, label)

        draw_samples.click(draw, [model, label, sample_seed], samples, api_name="samples")

        @answer
        def pick(name: str, label: Any, event: gr.SelectData) -> tuple[np.ndarray, str]:
            return explorers.get(name).pick(event.index, label)

        picture.select(pick, [model, label], [picked, caption], api_name="pick")

        @answer
        def relabel(name: str, label: Any, image: Any) -> tuple[Any, ...]:
            """A new class: new samples and manifold, and the drawing read again under it."""
            explorer = explorers.get(name)
            return (explorer.samples(0, label) if explorer.generative else None, explorer.map_picture(label),
                    *reconstruct(name, label, image))

        label.input(relabel, [model, label, editor], [samples, picture, *drawn], api_name=False).then(
            measure, [model, label, editor], likelihood, api_name=False)  # the likelihood under the new class
    return demo


def _image(label: str, elem_id: str, height: int = SHOWN) -> gr.Image:
    """An output image shown with sharp pixels."""
    return gr.Image(label=label, interactive=False, format="png", height=height, elem_id=elem_id,
                    elem_classes=["pixelated"], buttons=["download"])


def _notes(explorer: Explorer) -> str:
    lines = explorer.notes()
    where = f"on `{explorer.device}`"
    head = f"**{explorer.name}** ({explorer.model.variant_name}, latent {'x'.join(map(str, explorer.shape))}, " \
           f"{where}; sliders by {explorer.sliders_by}; NLL with K = {NLL_SAMPLES})"
    return "\n".join([head, *(f"- {line}" for line in lines)])


def _samples_note(explorer: Explorer) -> str:
    """What the samples tab shows for this model, or why it shows nothing."""
    if not explorer.generative:
        return skip_note(explorer.model, "generative", "prior samples")
    what = f"{SAMPLES} decodes of draws from the prior"
    return what + (", of the class picked above." if explorer.num_classes else ".")


def _shown(explorer: Explorer, values: tuple[Any, ...]) -> list[Any]:
    """The values of the sliders this model shows (the first ones; the page sends all ``MAX_SLIDERS``, each
    checked: a NaN in a hidden slider is as malformed as in a shown one)."""
    return finite_values(values, MAX_SLIDERS, "slider")[:len(explorer.units)]


def _blank(image: Any) -> bool:
    """Whether an editor value holds nothing to read: no image, or one of a single colour (the empty canvas)."""
    value = image.get("composite") if isinstance(image, dict) else image
    if value is None:
        return True
    array = np.asarray(value)
    return array.dtype != object and array.size > 0 and bool((array == array.flat[0]).all())
