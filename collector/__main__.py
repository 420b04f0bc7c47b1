"""``python -m collector`` runs the same CLI as the ``collector`` console script."""

from collector.cli import main

raise SystemExit(main())
