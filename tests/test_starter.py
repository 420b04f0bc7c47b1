"""`collector init`: the starter config is generated from the models, valid as printed, and each
commented-out section is valid YAML once uncommented."""

from __future__ import annotations

import re

import yaml

from collector.config import ClockSettings, Config
from collector.configfile import load_config_text
from collector.starter import SECTIONS, starter_config


def test_the_starter_config_is_valid_and_names_every_section_and_clock_key() -> None:
    """Test that the printed starter loads and validates as it is, and that it shows every optional
    top-level section and every key of `clock` with its description."""
    text = starter_config()
    loaded = load_config_text(text, "plant.yaml")
    assert [m.info.id for m in loaded.machines] == ["lathe-01", "mill-01"]
    for section in SECTIONS:
        assert f"# {section}:" in text, section
    for name, field in ClockSettings.model_fields.items():
        assert f"#   {name}: " in text
        assert (field.description or "").split()[0] in text
    assert set(SECTIONS) <= set(Config.model_fields)


def test_each_commented_section_is_yaml_once_uncommented() -> None:
    """Test that dropping the leading `# ` of a commented block gives YAML that parses, with the
    explanations left as comments: a user uncomments what they need and nothing else breaks."""
    blocks: list[list[str]] = []
    inside = False
    for line in starter_config().splitlines():
        if re.match(r"# (- )?[a-z_]+:", line):  # a section or a source type begins
            blocks.append([line[2:]])
            inside = True
        elif inside and line.startswith(("#  ", "# #")):
            blocks[-1].append(line[2:])
        else:
            inside = False
    assert len(blocks) >= len(SECTIONS)
    for block in blocks:
        parsed = yaml.safe_load("\n".join(block))
        assert isinstance(parsed, dict | list), block
