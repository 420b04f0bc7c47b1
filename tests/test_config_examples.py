"""Every example in config/ is a valid configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.configfile import load_config

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    """Test that the example loads, resolves its machines and names only known sources."""
    loaded = load_config(path)
    assert loaded.config.sources
    assert {m.source for m in loaded.machines} <= {s.id for s in loaded.config.sources}
