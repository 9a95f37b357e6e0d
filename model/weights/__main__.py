"""`python -m model.weights`: a package's __main__, so runpy does not re-run a module `model` already imported."""

from model.weights.cli import main

raise SystemExit(main())
