"""``python -m zoo`` runs the command line (also under ``torchrun``)."""

from zoo.cli import main

raise SystemExit(main())
