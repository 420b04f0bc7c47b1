"""The OPC UA adapter at the Reading level, against real asyncua servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
from asyncua import Server, ua

from adapters.base import SourceError
from adapters.opcua.adapter import OpcUaAdapter, UnknownNodes
from collector.core.model import Quality
from tests.fixtures.opcua import OpcUaTestServer, plain_cnc
from tests.opcua_helpers import CNC, DECOY, FreezableProxy, Reader, bound, cnc_signals, context, source


async def test_plain_tags_become_readings_with_source_timestamps(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that String, Double and Boolean tags arrive as Readings with values and the source timestamp."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    async with OpcUaAdapter(source(opcua_server.url), [bound("cnc-01", **cnc_signals("CNC01"))],
                            context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 3, what="initial values")
        assert {r.signal: r.value for r in reader.readings()} == {"execution": "READY", "spindle_rpm": 0.0,
                                                                    "alarm": False}
        stamp = dt.datetime(2031, 5, 4, 3, 2, 1, 123456, tzinfo=dt.UTC)
        await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String,
                                 source_ts=stamp)
        await opcua_server.write(opcua_server.node(CNC, "CNC01.SpindleSpeed"), 1200.5, ua.VariantType.Double)
        await opcua_server.write(opcua_server.node(CNC, "CNC01.Alarm"), True, ua.VariantType.Boolean)
        await reader.wait(lambda: (r := reader.last("cnc-01", "alarm")) is not None and r.value is True,
                          what="alarm true")
        execution = reader.last("cnc-01", "execution")
        assert execution is not None and execution.value == "ACTIVE"
        assert execution.ts_ns == int(stamp.timestamp()) * 1_000_000_000 + 123_456_000
        assert execution.quality is Quality.GOOD and execution.status == ""
        spindle = reader.last("cnc-01", "spindle_rpm")
        assert spindle is not None and spindle.value == 1200.5
        await reader.stop()


async def test_first_value_is_stamped_no_earlier_than_the_open(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that a value unchanged for hours is reported from the moment the adapter opened, not its old source time."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String, source_ts=old)
    before = time.time_ns()
    async with OpcUaAdapter(source(opcua_server.url), [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")],
                            context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="initial value")
        assert reader.readings()[0].value == "ACTIVE"
        assert reader.readings()[0].ts_ns >= before
        await reader.stop()


@pytest.mark.parametrize("uncertain", ["good", "bad"])
async def test_bad_and_uncertain_status(opcua_server: OpcUaTestServer, tmp_path: Path, uncertain: str) -> None:
    """Test that a Bad status gives a bad Reading named after the status, and Uncertain counts as configured."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    async with OpcUaAdapter(source(opcua_server.url, uncertain=uncertain),
                            [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")], context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="initial value")
        node = opcua_server.node(CNC, "CNC01.Execution")
        await opcua_server.write(node, None, ua.VariantType.Null, status=ua.StatusCodes.BadSensorFailure)
        await reader.wait(lambda: reader.readings()[-1].status == "BadSensorFailure", what="bad reading")
        bad = reader.readings()[-1]
        assert bad.quality is Quality.BAD and bad.value is None
        await opcua_server.write(node, "ACTIVE", ua.VariantType.String, status=ua.StatusCodes.UncertainLastUsableValue)
        await reader.wait(lambda: reader.readings()[-1].status == "UncertainLastUsableValue", what="uncertain reading")
        last = reader.readings()[-1]
        assert last.quality is (Quality.GOOD if uncertain == "good" else Quality.BAD)
        assert last.value == ("ACTIVE" if uncertain == "good" else None)
        await reader.stop()


async def test_every_address_form_reads_the_same_node(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that ns=, nsu=, browse paths (index and URI), and i= addresses resolve to their nodes."""
    await opcua_server.start([DECOY, CNC], plain_cnc(CNC, ["CNC01"], decoy=DECOY))
    idx = opcua_server.ns[CNC]
    machines = [bound("by-index", execution=f"ns={idx};s=CNC01.Execution"),
                bound("by-uri", execution=f"nsu={CNC};s=CNC01.Execution"),
                bound("by-path", execution=f"/Objects/{idx}:Machines/{idx}:CNC01/{idx}:Execution"),
                bound("by-path-uri", **{"execution": cnc_signals("CNC01", "path")["execution"]}),
                bound("server", state="i=2259")]  # Server_ServerStatus_State: an enum, read as its number
    async with OpcUaAdapter(source(opcua_server.url), machines, context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len({r.machine for r in reader.readings()}) == 5, what="all five")
        for m in ("by-index", "by-uri", "by-path", "by-path-uri"):
            assert reader.readings(m)[0].value == "READY", m
        assert reader.readings("server")[0].value == 0  # ServerState.Running
        await reader.stop()


async def test_unknown_nodes_are_named_at_start(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that opening fails with every unknown node named by machine, signal and address."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    machines = [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution", alarm=f"nsu={CNC};s=CNC01.Nope"),
                bound("cnc-02", execution=f"/Objects/nsu={CNC};Machines/nsu={CNC};CNC02/nsu={CNC};Execution"),
                bound("cnc-03", execution="nsu=urn:missing;s=X")]
    with pytest.raises(UnknownNodes) as err:
        async with OpcUaAdapter(source(opcua_server.url), machines, context(tmp_path)):
            pass
    text = str(err.value)
    assert "3 node address(es) not found" in text
    assert f"machine cnc-01 signal alarm: node 'nsu={CNC};s=CNC01.Nope'" in text and "BadNodeIdUnknown" in text
    assert "machine cnc-02 signal execution" in text and "browse path not found" in text
    assert "machine cnc-03 signal execution" in text and "no namespace 'urn:missing'" in text
    assert "cnc-01 signal execution" not in text


async def test_unreachable_endpoint_raises_source_error(tmp_path: Path) -> None:
    """Test that opening a source whose server is down raises SourceError naming the endpoint."""
    from tests.fixtures._ports import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError, match="cannot connect to " + url):
        async with OpcUaAdapter(source(url), [bound("m", x="i=2259")], context(tmp_path)):
            pass


async def test_many_nodes_split_across_subscriptions(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that 1,000 monitored items on one session report, split over subscriptions of 300, within call limits."""
    names = [f"M{i:04d}" for i in range(334)]
    tags = plain_cnc(CNC, names)

    async def build(server: Server, ns: dict[str, int]) -> None:
        await tags(server, ns)
        for limit in (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                      ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall):
            await server.get_node(ua.NodeId(limit)).write_value(ua.Variant(250, ua.VariantType.UInt32))

    await opcua_server.start([CNC], build)
    machines = [bound(n, **cnc_signals(n)) for n in names]
    async with OpcUaAdapter(source(opcua_server.url, max_items_per_subscription=300), machines,
                            context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 1002, within=30, what="1,002 initial values")
        assert len(adapter._subs) == 4
        assert (adapter._read_chunk, adapter._items_chunk) == (250, 250)  # the server's operation limits
        await opcua_server.write(opcua_server.node(CNC, "M0333.SpindleSpeed"), 99.0, ua.VariantType.Double)
        await reader.wait(lambda: (r := reader.last("M0333", "spindle_rpm")) is not None and r.value == 99.0,
                          what="change on the last subscription")
        await reader.stop()


async def test_server_stop_raises_out_of_the_iterator(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that a stopped server makes the adapter raise SourceError within a few keep-alive periods."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    async with OpcUaAdapter(source(opcua_server.url), [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")],
                            context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="initial value")
        stopped = asyncio.get_running_loop().time()
        await opcua_server.stop()
        await reader.wait(lambda: reader.error is not None, within=5, what="SourceError")
        assert isinstance(reader.error, SourceError)
        assert asyncio.get_running_loop().time() - stopped < 3 * 0.5 + 3.0  # slack for a loaded machine


async def test_silent_connection_detected_within_a_few_keepalives(opcua_server: OpcUaTestServer,
                                                                  tmp_path: Path) -> None:
    """Test that a connection that goes silent (no close, no data) raises SourceError within three keep-alives."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    proxy = FreezableProxy(opcua_server.port)
    await proxy.start()
    try:
        async with OpcUaAdapter(source(f"opc.tcp://127.0.0.1:{proxy.port}"),
                                [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")],
                                context(tmp_path)) as adapter:
            reader = Reader(adapter)
            await reader.wait(lambda: bool(reader.readings()), what="initial value")
            frozen = asyncio.get_running_loop().time()
            proxy.frozen = True
            await reader.wait(lambda: reader.error is not None, within=10, what="SourceError")
            assert isinstance(reader.error, SourceError)
            assert asyncio.get_running_loop().time() - frozen <= 3 * 0.5 + 3.0  # slack for a loaded machine
    finally:
        await proxy.stop()


async def test_absolute_deadband_on_numeric_nodes(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that with `deadband` small changes of a number are not reported and strings are unaffected."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    signals = cnc_signals("CNC01")
    async with OpcUaAdapter(source(opcua_server.url, deadband=10.0),
                            [bound("cnc-01", spindle_rpm=signals["spindle_rpm"], execution=signals["execution"])],
                            context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 2, what="initial values")
        node = opcua_server.node(CNC, "CNC01.SpindleSpeed")
        for value in (5.0, 9.0, 25.0):  # 5 and 9 are within 10 of 0; 25 is not
            await opcua_server.write(node, value, ua.VariantType.Double)
        await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String)
        await reader.wait(lambda: (r := reader.last("cnc-01", "execution")) is not None and r.value == "ACTIVE",
                          what="execution change")
        await reader.wait(lambda: (r := reader.last("cnc-01", "spindle_rpm")) is not None and r.value == 25.0,
                          what="spindle 25")
        assert [r.value for r in reader.readings("cnc-01", "spindle_rpm")] == [0.0, 25.0]
        await reader.stop()


async def test_server_clock_behind_never_reports_older_than_before(opcua_server: OpcUaTestServer,
                                                                   tmp_path: Path) -> None:
    """Test that a source timestamp older than the machine's previous reading is moved up to it and counted."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    ctx = context(tmp_path)
    async with OpcUaAdapter(source(opcua_server.url), [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")],
                            ctx) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="initial value")
        first = reader.readings()[0].ts_ns
        behind = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)  # a server clock 30 s slow
        await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String,
                                 source_ts=behind)
        await reader.wait(lambda: reader.readings()[-1].value == "ACTIVE", what="ACTIVE")
        assert reader.readings()[-1].ts_ns == first
        assert ctx.bad_input.counts[("cell", "timestamp_behind")] == 1
        await reader.stop()


async def test_arrival_timestamps_ignore_the_server_clock(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that `timestamps: arrival` stamps values when they arrive, whatever the source timestamp says."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    async with OpcUaAdapter(source(opcua_server.url, timestamps="arrival"),
                            [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")], context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="initial value")
        before = time.time_ns()
        await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String,
                                 source_ts=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
        await reader.wait(lambda: reader.readings()[-1].value == "ACTIVE", what="ACTIVE")
        assert before <= reader.readings()[-1].ts_ns <= time.time_ns()
        await reader.stop()


async def test_endpoint_that_never_answers_fails_the_open_in_time(opcua_server: OpcUaTestServer,
                                                                  tmp_path: Path) -> None:
    """Test that a server accepting TCP but never answering fails the open with SourceError within the timeout."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    proxy = FreezableProxy(opcua_server.port)
    await proxy.start()
    proxy.frozen = True
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(SourceError, match="no answer within 2s"):
            async with OpcUaAdapter(source(f"opc.tcp://127.0.0.1:{proxy.port}", timeout=1),
                                    [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")], context(tmp_path)):
                pass
        assert asyncio.get_running_loop().time() - started < 4
    finally:
        await proxy.stop()
