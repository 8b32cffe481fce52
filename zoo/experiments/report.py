"""What an experiment returns and how it is written: a Markdown report, a JSON file, its pictures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.cards import table_cell
from zoo.folder import atomic_write

#: The verdict on a claim, in words.
STATUS = {True: "holds", False: "does not hold", None: "undecided"}


@dataclass
class ExperimentResult:
    """One experiment's outcome. ``holds`` is the measured verdict on the claim (True, False, or None
    where the measurement cannot decide); ``verdict`` says it in words, with the numbers."""

    name: str
    claim: str
    numbers: dict[str, Any]
    holds: bool | None
    verdict: str
    #: (file name in the experiment's folder, caption)
    pictures: list[tuple[str, str]] = field(default_factory=list)
    #: How it was measured: models, data, sample counts, budget.
    method: str = ""
    quick: bool = False

    @property
    def status(self) -> str:
        return STATUS[self.holds]

    @property
    def claim_verdict(self) -> str:
        """The verdict in words: the claim holds, does not hold, or is undecided."""
        return f"the claim {'is undecided' if self.holds is None else self.status}"

    def markdown(self) -> str:
        pictures = "\n\n".join(f"![{caption}]({file})\n\n{caption}" for file, caption in self.pictures)
        rows = "\n".join(f"| {table_cell(key)} | {_fmt(value)} |" for key, value in self.numbers.items())
        run = f"zoo experiment {self.name}" + (" --quick" if self.quick else "")
        return f"""# {self.name}

**Claim.** {self.claim}

**Verdict: {self.claim_verdict} in this measurement.** {self.verdict}

## Method

{self.method}

Rerun with `{run}`{" (quick: a short version, for the tests)" if self.quick else ""}.

## Numbers

| quantity | value |
| --- | --- |
{rows}

## Pictures

{pictures or "(none)"}
"""

    def write(self, folder: Path) -> None:
        atomic_write(folder / "README.md", lambda tmp: tmp.write_text(self.markdown()))
        payload = {"name": self.name, "claim": self.claim, "holds": self.holds, "verdict": self.verdict,
                   "quick": self.quick, "numbers": self.numbers}
        atomic_write(folder / "results.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def seed_statistics(per_seed: dict[str, list[float]]) -> dict[str, float | list[float]]:
    """For each quantity measured once per seed: its mean, its standard deviation over the seeds (``KEY, sd
    over seeds``) and the values themselves (``KEY, per seed``), the rows a report's table shows."""
    numbers: dict[str, float | list[float]] = {}
    for key, values in per_seed.items():
        numbers[key] = float(np.mean(values))
        numbers[f"{key}, sd over seeds"] = float(np.std(values, ddof=1))
        numbers[f"{key}, per seed"] = list(values)
    return numbers


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds of a - b (the same seeds)."""
    diff = np.asarray(a) - np.asarray(b)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
