"""Outputs without servers: the machine filter, the field policy, the config, and the cursor
arithmetic of the outbox (property-tested against a model)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.config import Config
from collector.core.lineprotocol import encode, to_line
from collector.core.model import Interval, MachineInfo, State, StateChange
from collector.influx.config import MachineFilter, OutputSettings
from collector.influx.outbox import OutboxStore
from collector.influx.selection import Selection, matches, parse

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000_000


def change(machine: str, *, line: str = "L1", plant: str = "p1", reason: str = "rule 2: alarm 'E42' spindle=0") -> str:
    return to_line(StateChange(MachineInfo(id=machine, plant=plant, line=line), 1_700_000_000 * S, State.DOWN,
                               State.BUSY, 12 * S, reason))


def roll_up(machine: str) -> str:
    secs = dict.fromkeys(State, 0) | {State.BUSY: 60 * S}
    return to_line(Interval(MachineInfo(id=machine, plant="p1", line="L1"), 0, 60 * S, secs, State.BUSY))


def output(**kw: object) -> OutputSettings:
    return OutputSettings.model_validate({"name": "o", "url": "http://127.0.0.1:1", "api": "v1", **kw})


# -- the filter ------------------------------------------------------------------------------

PUBLIC = {"cnc-01", "press-02"}


@pytest.mark.parametrize(("rule", "machine", "tags", "passes"), [
    ({}, "anything", {}, True),
    ({"public": True}, "cnc-01", {}, True),
    ({"public": True}, "cnc-03", {}, False),
    ({"ids": ["cnc-*"]}, "cnc-03", {}, True),
    ({"ids": ["cnc-*"]}, "press-02", {}, False),
    ({"ids": ["press-0[1-2]", "lathe"]}, "press-02", {}, True),
    ({"ids": ["press-0[1-2]"]}, "press-03", {}, False),
    ({"ids": ["CNC-*"]}, "cnc-01", {}, False),  # case matters: ids are tags, InfluxDB keeps case
    ({"tags": {"line": "L1"}}, "cnc-03", {"line": "L1"}, True),
    ({"tags": {"line": "L*"}}, "cnc-03", {"line": "assembly"}, False),
    ({"tags": {"cell": "*"}}, "cnc-03", {"line": "L1"}, False),  # a tag the point lacks does not match
    ({"public": True, "ids": ["cnc-*"]}, "press-02", {}, False),  # public but not a cnc: every condition holds
    ({"public": True, "tags": {"plant": "shen*"}}, "cnc-01", {"plant": "shenzhen-1"}, True),
])
def test_machine_filter(rule: dict[str, object], machine: str, tags: dict[str, str], passes: bool) -> None:
    """Test that public, id globs and tag globs each narrow an output, and together all must hold."""
    assert matches(MachineFilter.model_validate(rule), {"machine": machine, **tags}, PUBLIC.__contains__) is passes


def test_a_point_without_a_machine_tag_never_passes_a_public_or_id_filter() -> None:
    """Test that a point naming no machine is kept off an output that asks for public machines or ids."""
    assert not matches(MachineFilter(public=True), {"plant": "p"}, lambda m: True)
    assert not matches(MachineFilter(ids=["*"]), {"plant": "p"}, lambda m: True)


def test_the_platform_selection_keeps_public_points_and_drops_reason() -> None:
    """Test that the platform's selection sends the public machines' points only, the state
    changes without `reason` (other fields as written), the roll-ups unchanged, and that a
    public machine made private by a reload stops at once."""
    public = set(PUBLIC)
    selection = Selection(output(machines={"public": True}, drop_fields=["reason"]), public.__contains__)
    lines = [change("cnc-01"), change("cnc-03"), roll_up("cnc-01"), roll_up("lathe-9"), change("press-02")]
    sent, unreadable = selection.apply(lines)
    assert unreadable == 0
    assert sent == [change("cnc-01").split(",reason=")[0] + " 1700000000000000000", roll_up("cnc-01"),
                    change("press-02").split(",reason=")[0] + " 1700000000000000000"]
    public.discard("press-02")
    assert [parse(line).tags["machine"] for line in selection.apply(lines)[0]] == ["cnc-01", "cnc-01"]  # type: ignore[union-attr]


def test_a_point_left_without_fields_is_not_sent_and_unreadable_lines_are_counted() -> None:
    """Test that dropping every field of a point drops the point, and that a line that does not
    split is left out of a filtered output and counted (never guessed through)."""
    selection = Selection(output(drop_fields=["v"]), lambda m: True)
    assert selection.apply(["m,machine=a v=1i 1", "m,machine=a v=1i,w=2i 2"]) == (["m,machine=a w=2i 2"], 0)
    filtered = Selection(output(machines={"ids": ["a"]}), lambda m: True)
    assert filtered.apply(["m,machine=a v=1i 1", "garbage", "m,machine=a 1"]) == (["m,machine=a v=1i 1"], 2)
    everything = Selection(output(), lambda m: True)
    assert everything.everything and everything.apply(["garbage"]) == (["garbage"], 0)


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), min_size=1, max_size=12)
_value = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                   st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))


@given(_text, st.dictionaries(_text, _text, max_size=4),
       st.dictionaries(_text, _value, min_size=1, max_size=5), st.integers(0, 2**62), st.data())
def test_parse_reads_back_what_the_encoder_writes(measurement: str, tags: dict[str, str], fields: dict[str, object],
                                                  ts: int, data: st.DataObject) -> None:
    """Test that any point the collector's encoder writes (any escapes, quotes, commas, spaces,
    equals signs, newlines in tags and strings) parses back to its tags and field keys, and that
    dropping fields leaves exactly the other fields as the encoder writes them."""
    line = encode(measurement, tags, fields, ts)
    point = parse(line)
    assert point is not None
    assert point.tags == {k: v for k, v in tags.items() if v}
    assert [k for k, _ in point.fields] == list(fields)
    assert point.ts == str(ts)
    drop = data.draw(st.sets(st.sampled_from(sorted(fields))))
    sent, unreadable = Selection(output(drop_fields=sorted(drop)), lambda m: True).apply([line])
    kept = {k: v for k, v in fields.items() if k not in drop}
    assert unreadable == 0
    assert sent == ([encode(measurement, tags, kept, ts)] if kept else [])


# -- the config ------------------------------------------------------------------------------

BASE = {"site": {"plant": "p1"}, "sources": [], "machines": []}


def test_influx_is_the_shorthand_for_one_unfiltered_output_named_influx() -> None:
    """Test that `influx:` reads as one output `influx` with no filter, field policy or bound of its own."""
    config = Config.model_validate({**BASE, "influx": {"url": "http://i:8086", "api": "v1", "database": "d"}})
    (only,) = config.output_list()
    assert (only.name, only.url, only.database, only.config_key) == ("influx", "http://i:8086", "d", "influx")
    assert only.machines.everything and not only.drop_fields and only.max_mb is None


def test_outputs_config_errors_name_the_yaml_keys() -> None:
    """Test that `influx` with `outputs`, a duplicate output name and a bad name are refused with the key."""
    with pytest.raises(ValidationError, match=r"outputs: set together with `influx`"):
        Config.model_validate({**BASE, "influx": {"url": "http://i"}, "outputs": [{"name": "a", "url": "http://i"}]})
    with pytest.raises(ValidationError, match=r"outputs\[1\]\.name: duplicate output name 'a'"):
        Config.model_validate({**BASE, "outputs": [{"name": "a", "url": "http://i"}, {"name": "a", "url": "http://j"}]})
    with pytest.raises(ValidationError, match="name"):
        Config.model_validate({**BASE, "outputs": [{"name": "a b", "url": "http://i"}]})
    config = Config.model_validate({**BASE, "outputs": [{"name": "a", "url": "http://i"}, {"name": "b", "url": "http://j"}]})
    assert [o.config_key for o in config.output_list()] == ["outputs[0]", "outputs[1]"]


def test_the_example_config_loads_with_two_outputs() -> None:
    """Test that config/plant-and-platform.yaml loads: the plant gets everything, the platform the
    public machines without `reason`."""
    from collector.configfile import load_config

    config = load_config(ROOT / "config" / "plant-and-platform.yaml").config
    plant, platform = config.output_list()
    assert plant.machines.everything and not plant.drop_fields
    assert platform.machines.public and platform.drop_fields == ["reason"] and platform.api == "victoriametrics"
    assert any(m.public for m in config.machines) and any(not m.public for m in config.machines)


# -- the cursors -----------------------------------------------------------------------------

OUTPUTS = ("plant", "platform", "archive")
_op = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("advance"), st.sampled_from(OUTPUTS), st.integers(0, 40)),
    st.tuples(st.just("bound"), st.sampled_from(OUTPUTS), st.integers(0, 400)),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_op, max_size=40))
def test_no_interleaving_of_appends_and_acks_deletes_a_row_an_output_has_not_passed(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Test, against a model, that for any interleaving of appends, per-output cursor moves, size
    bounds and reopens: a row stays while any output's cursor is before it, goes once all passed
    it, every output reads exactly the rows after its cursor, and the per-output backlog figures
    match a recount."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o.sqlite"
        store = OutboxStore(path, outputs=OUTPUTS, sync="normal")
        rows: dict[int, int] = {}  # id -> points, appended and not yet passed by every output
        cursor = dict.fromkeys(OUTPUTS, 0)
        next_id = 1
        try:
            for op in ops:
                if op[0] == "append":
                    store.append([f"m,machine=x v={i}i {next_id}" for i in range(op[1])])
                    rows[next_id] = op[1]
                    next_id += 1
                elif op[0] == "advance":
                    _, name, upto = op
                    store.advance(name, upto)  # past the last row: held at the last row
                    cursor[name] = max(cursor[name], min(upto, next_id - 1))
                elif op[0] == "bound":
                    _, name, max_bytes = op
                    store.enforce_bound(max_bytes, name)
                    cursor[name] = store.cursor[name]  # the bound moves the cursor: check what it left
                    assert store.pending_bytes[name] <= max_bytes
                else:
                    store.close()
                    store = OutboxStore(path, outputs=OUTPUTS, sync="normal")
                assert store.cursor == cursor
                floor = min(cursor.values())
                stored = dict(store.db.execute("SELECT id, points FROM outbox"))
                assert stored == {i: n for i, n in rows.items() if i > floor}
                for name in OUTPUTS:
                    ids = [c.id for c in store.peek(10**6, name)]
                    assert ids == sorted(i for i in rows if i > cursor[name])
                    assert store.pending_points[name] == sum(n for i, n in rows.items() if i > cursor[name])
                assert store.points == sum(stored.values())
        finally:
            store.close()


def test_a_removed_output_holds_no_row_back_and_a_new_one_starts_from_the_oldest_stored(tmp_path: Path) -> None:
    """Test that reopening without an output deletes the rows only it held, and that an output
    added later reads every row still stored."""
    path = tmp_path / "o.sqlite"
    store = OutboxStore(path, outputs=["plant", "platform"])
    store.append(["m v=1i 1"])
    store.append(["m v=2i 2"])
    store.advance("plant", 2)
    store.close()
    store = OutboxStore(path, outputs=["plant"])
    assert store.removed == ["platform"] and store.points == 0
    store.append(["m v=3i 3"])
    store.close()
    store = OutboxStore(path, outputs=["plant", "archive"])
    assert [c.lines for c in store.peek(10, "archive")] == [["m v=3i 3"]] and store.pending_points["plant"] == 1
    store.close()


@pytest.mark.parametrize("outputs", [["influx"], ["influx", "platform"], ["plant", "platform"]])
def test_a_single_output_file_is_migrated_and_drains_to_every_output(tmp_path: Path, outputs: list[str]) -> None:
    """Test that a file written by the single-output release (schema 1, tests/data/outbox-schema1.sqlite:
    one row delivered, two pending, a dead letter, a tracker checkpoint) opens at schema 2: its
    pending points are pending for every configured output (so `influx:` drains them as before),
    its dead letter belongs to `influx`, its checkpoint is kept."""
    from collector.influx.outbox import SCHEMA_VERSION

    path = tmp_path / "outbox.sqlite"
    path.write_bytes((ROOT / "tests" / "data" / "outbox-schema1.sqlite").read_bytes())
    store = OutboxStore(path, outputs=outputs)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for name in outputs:
            lines = [line for c in store.peek(100, name) for line in c.lines]
            assert [parse(line).tags["machine"] for line in lines] == ["cnc-02", "cnc-01", "cnc-02"]  # type: ignore[union-attr]
            assert store.pending_points[name] == 3
        assert store.dead_lines("influx") == [('bad,machine=cnc-01 v="x" 1', "rejected (400): field type conflict")]
        assert store.load_state()["cnc-01"][0] == b'{"state": "busy"}'
        for name in outputs:
            store.advance(name, store.peek(100, name)[-1].id)
        assert store.points == 0
    finally:
        store.close()


# -- a reload that makes a machine private ---------------------------------------------------

class FakeWriter:
    """A stand-in server: refuses while ``down``, records every accepted body."""

    def __init__(self) -> None:
        self.down = False
        self.bodies: list[bytes] = []

    async def write(self, body: bytes) -> None:
        from collector.influx.writers import WriteError

        if self.down:
            raise WriteError("retry", "down")
        self.bodies.append(body)

    async def check(self) -> str:
        return "fake"

    async def close(self) -> None:
        return None

    def machines(self) -> set[str]:
        return {parse(line).tags["machine"] for b in self.bodies for line in b.decode().split("\n")}  # type: ignore[union-attr]


def reload_plant(path: Path, private: set[str]) -> Path:
    rows = "\n".join(f"  - {{id: {m}, source: sim, profile: cnc, public: {str(m not in private).lower()}}}"
                     for m in ("a", "b"))
    path.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: sim, type: simulate, seed: 3, publish_every: 100ms, speed: 0.01}}
profiles:
  cnc:
    signals: {{execution: execution, alarm: alarm}}
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle}}
machines:
{rows}
tracker: {{interval: 1s}}
outputs:
  - {{name: plant, url: "http://127.0.0.1:1", api: v1, database: d}}
  - {{name: platform, url: "http://127.0.0.1:1", api: victoriametrics, machines: {{public: true}}}}
outbox: {{path: {path.parent / "outbox.sqlite"}, flush_interval: 0.05, commit_delay: 0,
          retry_initial: 0.05, retry_max: 0.1}}
http: {{enabled: false}}
""")
    return path


async def test_a_reload_that_makes_a_machine_private_keeps_its_queued_points_off_the_platform(tmp_path: Path) -> None:
    """Test that points of a public machine queued for the platform while it is down never reach
    it once a reload made the machine private, while the plant gets every point throughout."""
    import asyncio

    from collector.configfile import load_config
    from collector.engine import Engine
    from collector.influx import public_machines
    from collector.influx.sink import OutboxSink
    from collector.reload import Reloader
    from tests.fixtures._ports import until

    cfg = reload_plant(tmp_path / "c.yaml", private=set())
    loaded = load_config(cfg)
    plant, platform = FakeWriter(), FakeWriter()
    platform.down = True
    sink = OutboxSink(loaded.config.output_list(), loaded.config.outbox, writers={"plant": plant, "platform": platform},
                      public=public_machines(loaded.config))
    engine = Engine(loaded, sink)
    stop = asyncio.Event()
    runner = asyncio.create_task(engine.run(stop))
    try:
        await until(lambda: plant.bodies and plant.machines() == {"a", "b"}, 20, "both machines' points in the plant")
        await until(lambda: sink.output_stats()["platform"]["depth_points"] > 4, 20, "a queue for the platform")
        reload_plant(cfg, private={"b"})
        taken, lines = await Reloader(engine, cfg).reload()
        assert taken, lines
        assert "outputs" not in " ".join(lines)  # the outputs did not change: no restart needed
        platform.down = False
        await until(lambda: platform.bodies and sink.output_stats()["platform"]["depth_points"] == 0, 20,
                    "the platform drained")
        assert platform.machines() == {"a"}
        assert sink.output_stats()["platform"]["points_filtered_total"] > 0
    finally:
        stop.set()
        await runner


async def test_each_output_has_its_own_bound(tmp_path: Path) -> None:
    """Test that an output down past its `max_mb` drops its own oldest points (counted for it
    alone) while the output that is up receives every point, and that the file keeps only what
    some output still needs."""
    from collector.influx.config import OutboxSettings
    from collector.influx.sink import OutboxSink
    from tests.fixtures._ports import until

    plant, platform = FakeWriter(), FakeWriter()
    platform.down = True
    outputs = [output(name="plant"), output(name="platform", max_mb=0.01)]
    settings = OutboxSettings.model_validate({"path": tmp_path / "o.sqlite", "flush_interval": 0.02,
                                              "commit_delay": 0, "retry_initial": 0.5, "retry_max": 0.5})
    lines = [change(f"m{i % 7}", reason=f"r{i} " + "x" * (i % 50)).replace(" 1700000000000000000", f" {i}")
             for i in range(4_000)]
    async with OutboxSink(outputs, settings, writers={"plant": plant, "platform": platform}) as sink:
        for i in range(0, len(lines), 50):
            await sink.write(lines[i:i + 50])
        await until(lambda: sink.output_stats()["plant"]["depth_points"] == 0, 20, "the plant drained")
        stats = sink.output_stats()
        assert stats["platform"]["dropped_total"] > 0 and stats["plant"]["dropped_total"] == 0
        assert stats["platform"]["depth_bytes"] <= 0.01 * 1024 * 1024
        assert sink.stats()["depth_points"] == stats["platform"]["depth_points"]  # the file holds the largest backlog
        platform.down = False
        await until(lambda: sink.stats()["depth_points"] == 0, 20, "the platform drained")
        kept, dropped = stats["platform"]["depth_points"], stats["platform"]["dropped_total"]
        assert sink.output_stats()["platform"]["points_written_total"] == kept == 4_000 - dropped
    sent = [line for b in plant.bodies for line in b.decode().split("\n")]
    assert sent == lines
    tail = [line for b in platform.bodies for line in b.decode().split("\n")]
    assert tail == lines[-len(tail):]  # the platform lost its oldest, and only those
