"""``python -m zoo`` runs the command line (also under ``torchrun``)."""

from zoo.cli import entry_point

raise SystemExit(entry_point())
