"""``zoo explore NAME --space OUT``: a folder that runs as a Hugging Face Space (Gradio SDK).

The folder holds ``app.py`` (the same page as ``zoo explore``), ``requirements.txt`` (ae-zoo with its
``explore`` extra, at this version) and ``README.md``, whose YAML front matter tells the Hub how to run it
(``sdk: gradio`` at the Gradio version installed here, ``app_file: app.py``). A registered checkpoint or a
``hf-hub:`` model is named as it is (the Space installs ae-zoo, which bundles the checkpoints, or reads
the Hub); a model from a folder is copied into ``OUT/model/`` so the Space carries its weights.

``python app.py`` in the folder serves the page on 127.0.0.1:7860; on Spaces the runtime sets
``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT``, which ``app.py`` passes on (there the page has to be
reachable from outside the container).
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from zoo.errors import ConfigError

#: The files of a model folder a Space needs.
MODEL_FILES = ("config.json", "model.safetensors", "README.md")

APP = '''"""Hugging Face Space: the ae-zoo explorer of {title}, written by `zoo explore {name} --space OUT`.

Run it here with `python app.py` (http://127.0.0.1:7860). On Spaces the runtime sets GRADIO_SERVER_NAME
(0.0.0.0) and GRADIO_SERVER_PORT, which are passed on below.
"""

import os
from pathlib import Path

from zoo.explore.serve import serve

HERE = Path(__file__).resolve().parent
MODEL = {model}

if __name__ == "__main__":
    serve(MODEL, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
          port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), data={data!r})
'''

README = """---
{front_matter}
---

# ae-zoo explorer: {title}

Draw or upload an image and see its reconstruction, posterior and likelihood; move the informative latents
with sliders; interpolate between two images; draw prior samples; click on the map of the latent space.
The page is [ae-zoo](https://pypi.org/project/ae-zoo/)'s `zoo explore`; this folder was written by

```
zoo explore {name} --space OUT
```

Run it locally with `pip install -r requirements.txt && python app.py`. `requirements.txt` installs ae-zoo
{version} from PyPI; for a version that is not published there, point it at your copy
(`ae-zoo[explore] @ git+https://github.com/ORG/ae-zoo@REVISION`).
"""


def write_space(name: str, out: str | Path, *, data: str | None = None) -> Path:
    """Write the Space folder ``out`` for model ``name`` (loaded first, so a bad name fails before anything is
    written); ``data`` is the test dataset the page uses instead of the model card's. Returns ``out``."""
    from huggingface_hub import SpaceCardData

    from zoo import __version__
    from zoo.hub import HUB_PREFIX
    from zoo.plugins import get_registry
    from zoo.registry import from_pretrained

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: pick a new folder for the Space")
    try:
        gradio_version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise ConfigError("writing a Space pins the Gradio version it was tested with: install it first "
                          "(pip install 'ae-zoo[explore]')") from None
    model = from_pretrained(name, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    if name in get_registry().checkpoints or name.startswith(HUB_PREFIX):
        reference, title = repr(name), name
        models = [name.removeprefix(HUB_PREFIX).split("@")[0]] if name.startswith(HUB_PREFIX) else None
    else:
        source = Path(model.pretrained_info["path"])
        (out / "model").mkdir()
        for file in MODEL_FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, out / "model" / file)
        reference, title, models = 'f"local-dir:{HERE / \'model\'}"', source.name, None
    card = SpaceCardData(title=f"ae-zoo explorer: {title}"[:60], sdk="gradio", sdk_version=gradio_version,
                         python_version=f"{sys.version_info.major}.{sys.version_info.minor}", app_file="app.py",
                         license="mit", models=models, tags=["ae-zoo", "autoencoder", model.variant_name],
                         emoji="🔍", colorFrom="indigo", colorTo="gray", pinned=False,
                         short_description=f"Explore the latent space of {title}"[:60])
    (out / "app.py").write_text(APP.format(title=title, name=name, model=reference, data=data))
    (out / "requirements.txt").write_text(f"ae-zoo[explore]=={__version__}\n")
    (out / "README.md").write_text(README.format(front_matter=card.to_yaml(), title=title, name=name,
                                                 version=__version__))
    return out
