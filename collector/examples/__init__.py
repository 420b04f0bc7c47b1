"""Files shipped with the package: the example plant that `collector demo` and `collector
simulate` run when no config is given (a link to config/example.yaml in the repository, a file
in the wheel), so both work from a plain `pip install` outside the repository."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent / "example.yaml"
