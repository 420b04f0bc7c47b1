"""Config loading: the example validates; wrong configs fail with file:line, path and expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.cli import main
from collector.configfile import ConfigError, load_config, load_config_text
from collector.reference import config_reference

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"

GOOD = """\
site: {plant: p1}
sources:
  - {id: sim, type: simulate}
profiles:
  lathe:
    signals: {execution: "{node}.Execution", spindle_rpm: "{node}.Spindle"}
    rules:
      - {state: busy, when: "execution == 'ACTIVE' or spindle_rpm > 50"}
      - {state: idle}
machines:
  - {id: m1, source: sim, profile: lathe, vars: {node: CNC1}}
  - {id: m2, source: sim, profile: lathe, vars: {node: CNC2}, signals: {spindle_rpm: "other.Spindle"}}
"""


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_example_config_is_valid() -> None:
    """Test that config/example.yaml loads and resolves every machine."""
    loaded = load_config(EXAMPLE)
    assert len(loaded.machines) == 12
    assert {m.profile for m in loaded.machines} == {"cnc", "packml-line", "machinery"}


def test_profile_templates_are_filled_per_machine() -> None:
    """Test that a profile is written once and machines override only what differs."""
    loaded = load_config_text(GOOD)
    signals = {m.info.id: m.bound.signals for m in loaded.machines}
    assert signals == {"m1": {"execution": "CNC1.Execution", "spindle_rpm": "CNC1.Spindle"},
                       "m2": {"execution": "CNC2.Execution", "spindle_rpm": "other.Spindle"}}
    assert loaded.machines[0].info.plant == "p1"


def test_unknown_key_names_line_path_and_suggestion(tmp_path: Path) -> None:
    """Test that an unknown key is reported with file:line:col, its path and a did-you-mean."""
    text = GOOD.replace("- {id: m1, source: sim, profile: lathe", "- {id: m1, source: sim, profle: lathe")
    out = problems(text, tmp_path)
    assert any(p.startswith(f"{tmp_path}/plant.yaml:11:27: machines[0].profle: unknown key 'profle'; "
                            "did you mean 'profile'?") for p in out), out


def test_wrong_type_names_line_path_and_expectation(tmp_path: Path) -> None:
    """Test that a wrong type is reported with its line, path, what was expected and what was given."""
    text = GOOD.replace("{id: sim, type: simulate}", "{id: sim, type: simulate, seed: many}")
    assert problems(text, tmp_path) == [
        f"{tmp_path}/plant.yaml:3:37: sources[0].seed: Input should be a valid integer, unable to parse string "
        "as an integer, got 'many'"]


def test_unknown_time_zone_names_line_path_and_expectation(tmp_path: Path) -> None:
    """Test that a time zone that is not an IANA name (one type for every zone field) stops the
    start with its line and path, for the simulator's shifts and the capacity forecast alike."""
    text = GOOD.replace("{id: sim, type: simulate}", "{id: sim, type: simulate, timezone: Europe/Berln}")
    text += "capacity: {timezone: CEST}\n"
    out = problems(text, tmp_path)
    assert any(p.startswith(f"{tmp_path}/plant.yaml:3:") and "sources[0].timezone: unknown time zone "
               "'Europe/Berln'; expected an IANA name like Europe/Berlin" in p for p in out), out
    assert any("capacity.timezone: unknown time zone 'CEST'" in p for p in out), out


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """Test that a YAML syntax error is reported with file:line:col."""
    out = problems(GOOD.replace("profiles:", "profiles: [", 1), tmp_path)
    assert len(out) == 1 and out[0].startswith(f"{tmp_path}/plant.yaml:") and "YAML syntax error" in out[0]
    line = int(out[0].split(":")[1])
    assert 4 <= line <= 6


def test_cross_references_are_checked_with_suggestions(tmp_path: Path) -> None:
    """Test that an unknown source or profile points at the machine's line and suggests the right name."""
    text = GOOD.replace("profile: lathe, vars: {node: CNC2}", "profile: lath, vars: {node: CNC2}")
    out = problems(text, tmp_path)
    assert out[0].startswith(f"{tmp_path}/plant.yaml:12:36: machines[1].profile: unknown profile 'lath' "
                             "(did you mean 'lathe'?)"), out


def test_bad_rule_and_missing_template_var(tmp_path: Path) -> None:
    """Test that an unparsable condition and a template variable no machine sets are both placed."""
    out = problems(GOOD.replace("spindle_rpm > 50", "spindle_rpm >"), tmp_path)
    assert out[0].startswith(f"{tmp_path}/plant.yaml:8:29: profiles.lathe.rules[0].when: invalid condition")
    out = problems(GOOD.replace("vars: {node: CNC1}", "vars: {nod: CNC1}"), tmp_path)
    assert "machines[0]" in out[0] and "needs 'node'" in out[0]


def test_env_substitution_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test ${VAR}, ${VAR:-default}, ${file:...} and COLLECTOR_ overrides."""
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("PLANT", "from-env")
    monkeypatch.setenv("COLLECTOR_INFLUX__BUCKET", "override")
    text = GOOD.replace("site: {plant: p1}", "site: {plant: '${PLANT}', name: '${NAME:-plain}'}") + (
        f"influx: {{url: 'http://x:8086', bucket: b, token: '${{file:{secret}}}'}}\n")
    config = load_config_text(text).config
    assert (config.site.plant, config.site.name) == ("from-env", "plain")
    assert config.influx is not None and config.influx.bucket == "override"
    assert config.influx.token is not None and config.influx.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    out = problems(GOOD.replace("p1", "'${NOPE_NOT_SET}'"), tmp_path)
    assert out == [f"{tmp_path}/plant.yaml:1:15: site.plant: environment variable NOPE_NOT_SET is not set "
                   "(write ${NOPE_NOT_SET:-default} for a default)"]


def test_validate_cli_summary_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `collector validate` prints a summary for a good config and exits 2 with errors for a bad one."""
    assert main(["validate", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "lathe-01" in out and "profile=cnc" in out and "simulate" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("type: simulate", "type: simulate, sed: 1"))
    assert main(["validate", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:31: sources[0].sed: unknown key 'sed'; did you mean 'seed'?" in err


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `collector schema` prints a JSON Schema with the sections and source types."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"site", "sources", "machines", "profiles"} <= set(schema["properties"])
    assert "simulate" in json.dumps(schema)


def test_config_reference_is_current() -> None:
    """Test that docs/CONFIG.md is what `collector config-reference` generates (regenerate it if not)."""
    committed = (ROOT / "docs" / "CONFIG.md").read_text()
    assert committed == config_reference(), "docs/CONFIG.md is stale: run `collector config-reference > docs/CONFIG.md`"


def test_shard_index_out_of_range_is_refused_with_its_line(tmp_path: Path) -> None:
    """Test that `shard.index` must be below `shard.count`, reported at the shard's line."""
    out = problems(GOOD + "shard: {index: 2, count: 2}\n", tmp_path)
    assert out == [f"{tmp_path}/plant.yaml:13:8: shard: index: 2 is not below count 2 (shards are 0 to count-1)"]


def test_shards_split_machines_by_id_one_owner_each() -> None:
    """Test that every machine id belongs to exactly one of N shards, and that the split is even enough."""
    from collector.config import Shard

    shards = [Shard(index=i, count=3) for i in range(3)]
    ids = [f"cnc-{i:04d}" for i in range(3000)]
    owners = [sum(s.owns(m) for s in shards) for m in ids]
    assert owners == [1] * len(ids)
    per_shard = [sum(s.owns(m) for m in ids) for s in shards]
    assert min(per_shard) > 800, per_shard
