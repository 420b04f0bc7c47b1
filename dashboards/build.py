"""Generate the dashboard JSON files committed under dashboards/json/.

The committed files come from ``SOURCE_CONFIG`` (the example plant); a test regenerates them
and fails when they differ. For your own plant: ``collector dashboards build -c your.yaml --out DIR``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from collector.config import Config
from dashboards.boards import Board, build_boards

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SOURCE_CONFIG = ROOT / "config" / "example.yaml"
JSON_DIR = Path(__file__).resolve().parent / "json"


def render(board: Board) -> str:
    return json.dumps(board.json, indent=2, ensure_ascii=False) + "\n"


def load(path: Path) -> Config:
    from collector.configfile import load_config

    return load_config(path).config


def write(boards: list[Board], out: Path) -> list[Path]:
    """Write every board; remove generated files of boards that no longer exist."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for board in boards:
        path = out / board.filename
        text = render(board)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            log.info("wrote %s", path)
        written.append(path)
    for stale in set(out.glob("*.json")) - set(written):
        stale.unlink()
        log.info("removed %s (no such board any more)", stale)
    return written


def stale_files(boards: list[Board], out: Path) -> list[str]:
    """Names of files in ``out`` that differ from what ``boards`` would write (empty: up to date)."""
    expected = {b.filename: render(b) for b in boards}
    present = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.json")} if out.exists() else {}
    return sorted(name for name in set(expected) | set(present) if expected.get(name) != present.get(name))


def build(config_path: Path = SOURCE_CONFIG, out: Path = JSON_DIR) -> list[Path]:
    return write(build_boards(load(config_path)), out)
