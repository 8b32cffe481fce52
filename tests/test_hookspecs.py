"""Meta-tests: every hook in the hookspec is documented in CONTRIBUTING.md and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from zoo import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def hook_names() -> list[str]:
    return sorted(name for name, fn in vars(hookspecs).items()
                  if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def test_the_hookspec_declares_the_three_registration_hooks():
    assert hook_names() == ["zoo_register_checkpoints", "zoo_register_samplers", "zoo_register_variants"]


@pytest.mark.parametrize("name", hook_names())
def test_hook_signature_is_documented_in_contributing(name):
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    params = list(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"`{name}`" in guide, f"{name} is not documented in CONTRIBUTING.md"
    row = next(line for line in guide.splitlines() if line.startswith(f"| `{name}` |"))
    for param in params:
        assert f"({param}:" in row, f"parameter {param!r} of {name} missing from its table row"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_implemented_in_a_test(name):
    """Each hook is implemented by some plugin that a test loads (not only by built-ins)."""
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    sources.append((ROOT / "examples" / "zoo-wae" / "zoo_wae" / "__init__.py").read_text())
    assert any(f"def {name}(" in text for text in sources), f"no test plugin implements {name}"
