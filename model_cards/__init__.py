"""Bundled pretrained checkpoints, installed as the package ``zoo_model_cards``.

Each sub-folder is exactly a Hugging Face Hub repo: ``README.md`` (the model card),
``config.json`` and ``model.safetensors``. The built-in plugin ``zoo_plugins.checkpoints`` registers
every folder here, so ``zoo.load("cvae-mnist")`` works with no network. ``recipes.py`` says how
each one was made; ``python -m zoo_model_cards.make NAME`` remakes it and rewrites its card.
"""
