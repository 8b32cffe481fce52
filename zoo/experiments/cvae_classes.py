"""Experiment 7: a CVAE generates the class it is asked for."""

from __future__ import annotations

from pathlib import Path

from zoo.experiments.report import ExperimentResult
from zoo.pictures import class_rows, save_grid
from zoo.sample_quality import conditional_accuracy

CLAIM = "A conditional VAE generates the requested class: its samples for label k are recognisably digit k."


def run(out: Path, quick: bool = False) -> ExperimentResult:
    import zoo
    from zoo.classifier import classifier_info

    per_class = 50 if quick else 1000
    model = zoo.load("cvae-mnist").eval()
    result = conditional_accuracy(model, per_class=per_class, seed=0)
    numbers = {"overall accuracy on the requested label": result["conditional_accuracy"]}
    numbers.update({f"digit {k}": acc for k, acc in enumerate(result["per_class"])})
    numbers["classifier's own accuracy on real test digits"] = float(classifier_info()["test_accuracy"])
    save_grid(class_rows(model, 10, per_class=10, seed=0), out / "classes.png", nrow=10)
    worst = min(range(10), key=lambda k: result["per_class"][k])
    holds = result["conditional_accuracy"] > 0.9 and min(result["per_class"]) > 0.5
    verdict = (f"zoo's MNIST classifier recognises the requested digit in {result['conditional_accuracy']:.1%} of "
               f"samples; the hardest class is {worst} ({result['per_class'][worst]:.1%}), chance is 10%.")
    method = (f"Bundled `cvae-mnist`; {per_class} samples per label (seed 0), each judged by zoo's MNIST classifier "
              "(its own test accuracy is in the table: the samples' accuracy cannot be read as better than that).")
    return ExperimentResult("cvae-classes", CLAIM, numbers, holds, verdict,
                            [("classes.png", "row k: 10 samples for label k")], method, quick)
