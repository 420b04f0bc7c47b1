"""Line protocol: the docs/DESIGN.md schema, escaping, and acceptance by a real influxd."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from collector.core.lineprotocol import escape_tag, quote_string, to_line
from collector.core.model import Interval, MachineInfo, State, StateChange
from tests.fixtures._proc import COLLECTOR, collector_env
from tests.fixtures.influxdb import InfluxD

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000_000


def test_state_change_line_matches_schema() -> None:
    """Test that a state change encodes tags, typed fields and the ns timestamp as the schema says."""
    m = MachineInfo(id="cnc 07", plant="p,1", line="a=b", cell="")
    line = to_line(StateChange(m, 1_700_000_000 * S, State.DOWN, State.BUSY, 12_500_000_000, 'alarm "E42"'))
    assert line == ('machine_state,line=a\\=b,machine=cnc\\ 07,plant=p\\,1 state="down",state_code=4i,'
                    'previous="busy",previous_s=12.5,reason="alarm \\"E42\\"" 1700000000000000000')


def test_interval_line_has_every_state_and_the_start_timestamp() -> None:
    """Test that a roll-up has all five *_s fields, the end state, and the interval start as time."""
    m = MachineInfo(id="m", plant="p", line="l", cell="c")
    secs = dict.fromkeys(State, 0) | {State.BUSY: 45 * S, State.IDLE: 15 * S}
    line = to_line(Interval(m, 60 * S, 120 * S, secs, State.IDLE))
    assert line == ('machine_availability,cell=c,line=l,machine=m,plant=p busy_s=45.0,idle_s=15.0,setup_s=0.0,'
                    'down_s=0.0,offline_s=0.0,state="idle" 60000000000')


@given(st.text(min_size=1))
def test_tag_escaping_round_trips(text: str) -> None:
    """Test that escaped tag values keep no bare separator (space, comma, equals)."""
    escaped = escape_tag(text)
    i = 0
    while i < len(escaped):
        if escaped[i] == "\\":
            i += 2
            continue
        assert escaped[i] not in " ,=\n"
        i += 1


@given(st.text())
def test_string_fields_have_no_bare_quote(text: str) -> None:
    """Test that a string field value is quoted with inner quotes and backslashes escaped."""
    quoted = quote_string(text)
    inner = quoted[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2
            continue
        assert inner[i] != '"'
        i += 1


def test_tricky_values_are_accepted_by_influxd(influxd: InfluxD) -> None:
    """Test that tags with spaces, commas and '=' and reasons with quotes survive a real influxd."""
    influxd.query("CREATE DATABASE lp")
    m = MachineInfo(id="cnc 07,a=b", plant="plant one", line="l")
    influxd.write(to_line(StateChange(m, 5 * S, State.DOWN, State.BUSY, S, 'alarm "E42" \\ x')), db="lp")
    rows = influxd.rows('SELECT state, reason, previous_s, machine FROM machine_state', db="lp")
    assert rows == [{"time": 5 * S, "state": "down", "reason": 'alarm "E42" \\ x', "previous_s": 1.0,
                     "machine": "cnc 07,a=b"}]


def test_run_print_output_is_accepted_by_influxd(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that `collector run --print` on the example config prints line protocol a real influxd accepts."""
    env = collector_env(COLLECTOR_HTTP__PORT="0", COLLECTOR_TRACKER__INTERVAL="1s", COLLECTOR_DATA_DIR=str(tmp_path))
    proc = subprocess.run([*COLLECTOR, "run", "-c", str(ROOT / "config" / "example.yaml"),
                           "--print", "--for", "4"], capture_output=True, text=True, env=env, timeout=60, check=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln]
    assert any(ln.startswith("machine_state,") for ln in lines)
    assert any(ln.startswith("machine_availability,") for ln in lines)
    influxd.query("CREATE DATABASE demo")
    influxd.write("\n".join(lines), db="demo")
    changes = influxd.rows("SELECT count(state) FROM machine_state", db="demo")
    assert changes[0]["count"] == sum(ln.startswith("machine_state,") for ln in lines)
    # every roll-up adds up to its interval (1 s here)
    rolls = influxd.rows("SELECT busy_s + idle_s + setup_s + down_s + offline_s AS total FROM machine_availability",
                         db="demo")
    assert rolls and all(abs(r["total"] - 1.0) < 1e-9 for r in rolls)
    # the stop writes every machine offline
    last = influxd.rows("SELECT last(state) FROM machine_state GROUP BY machine", db="demo")
    assert len(last) == 12 and {r["last"] for r in last} == {"offline"}
