"""Model cards: README.md with Hub YAML front matter, the measured numbers and how to reproduce them."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.losses import REDUCTION


def render_card(model: nn.Module, *, title: str, summary: str, dataset: str, command: str,
                metrics: dict[str, float], training: dict[str, Any], split: str = "test",
                base_model: str | None = None) -> str:
    """A model card for a trained model; ``metrics`` were measured on ``split`` of ``dataset``."""
    from huggingface_hub import ModelCardData

    from zoo.folder import zoo_version

    data = ModelCardData(library_name="ae-zoo", license="mit", base_model=base_model,
                         tags=["autoencoder", model.variant_name, "pytorch", "ae-zoo"],
                         datasets=[dataset] if dataset else None)
    n_params = sum(p.numel() for p in model.parameters())
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    settings = "\n".join(f"- `{k}`: {v}" for k, v in training.items())
    return f"""---
{data.to_yaml()}
---

# {title}

{summary}

- Variant: `{model.variant_name}` ({n_params:,} parameters); config in `config.json`.
- Loss convention: {REDUCTION} (terms summed over one example's dimensions, averaged over the batch).
- Made with ae-zoo {zoo_version()}.

## Training

Data: `{dataset}`. Settings:

{settings}

Command:

```
{command}
```

## Results ({split} split)

| metric | value |
| --- | --- |
{rows}

## Use

```python
import zoo
model = zoo.load("local-dir:PATH")  # or the checkpoint's name once published
```
"""
