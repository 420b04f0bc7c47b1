"""OPC 40001 discovery against a real asyncua server built in the Machinery shape."""

from __future__ import annotations

from pathlib import Path

from asyncua import Server

from adapters.opcua.adapter import OpcUaAdapter
from collector.core.model import MachineFound
from tests.fixtures.opcua import (
    DI,
    MACHINERY,
    OpcUaTestServer,
    add_machinery_machine,
    machinery_types,
    set_machinery_state,
)
from tests.opcua_helpers import VENDOR, Reader, bound, context, source


def machinery(locale: str = "en") -> object:
    async def build(server: Server, ns: dict[str, int]) -> None:
        await machinery_types(server, ns)
        await add_machinery_machine(server, ns, VENDOR, "Mill1", item=5006, mode=5026, locale=locale)
        await add_machinery_machine(server, ns, VENDOR, "Lathe2", item=5007, mode=5027, asset_id="lathe-02",
                                    locale=locale)

    return build


def found(reader: Reader) -> dict[str, MachineFound]:
    return {e.machine: e for e in reader.events if isinstance(e, MachineFound)}


async def test_machines_are_found_without_config_and_report_state_ids(opcua_server: OpcUaTestServer,
                                                                      tmp_path: Path) -> None:
    """Test that discovery finds every machine (id from browse name or AssetId) and reports the CurrentState Ids."""
    await opcua_server.start([VENDOR, DI, MACHINERY], machinery())  # type: ignore[arg-type]
    async with OpcUaAdapter(source(opcua_server.url, discover="machinery"), [], context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 4, what="four state readings")
        machines = found(reader)
        assert set(machines) == {"Mill1", "lathe-02"}
        assert machines["Mill1"].profile == "opc40001" and machines["Mill1"].source == "cell"
        assert set(machines["Mill1"].signals) == {"item_state", "operation_mode"}
        assert machines["Mill1"].signals["item_state"] == f"nsu={VENDOR};s=Mill1.MachineryItemState.CurrentState.Id"
        assert machines["lathe-02"].name == "Lathe2"
        values = {(r.machine, r.signal): r.value for r in reader.readings()}
        assert values == {("Mill1", "item_state"): 5006, ("Mill1", "operation_mode"): 5026,
                          ("lathe-02", "item_state"): 5007, ("lathe-02", "operation_mode"): 5027}
        first_reading = next(i for i, e in enumerate(reader.events) if not isinstance(e, MachineFound))
        assert all(isinstance(e, MachineFound) for e in reader.events[:first_reading])  # found before any reading

        await set_machinery_state(opcua_server, VENDOR, "Mill1", item=5004)
        await reader.wait(lambda: (r := reader.last("Mill1", "item_state")) is not None and r.value == 5004,
                          what="OutOfService")
        await reader.stop()


async def test_machine_added_later_appears_after_a_rescan(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that a machine added to the running server is found at the next rescan, with its state."""
    await opcua_server.start([DI, MACHINERY, VENDOR], machinery())  # type: ignore[arg-type]
    async with OpcUaAdapter(source(opcua_server.url, discover="machinery"), [], context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(found(reader)) == 2, what="two machines")
        assert opcua_server.server is not None
        await add_machinery_machine(opcua_server.server, opcua_server.ns, VENDOR, "Press3", item=5006, mode=5026)
        await reader.wait(lambda: "Press3" in found(reader), what="Press3 found by a rescan")
        await reader.wait(lambda: (r := reader.last("Press3", "item_state")) is not None and r.value == 5006,
                          what="Press3 executing")
        assert len(found(reader)) == 3  # the others are not announced twice
        await reader.stop()


async def test_localised_state_texts_map_by_id(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that a server with German state texts gives the same state ids."""
    await opcua_server.start([MACHINERY, VENDOR, DI], machinery(locale="de"))  # type: ignore[arg-type]
    async with OpcUaAdapter(source(opcua_server.url, discover="machinery"), [], context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 4, what="four state readings")
        await set_machinery_state(opcua_server, VENDOR, "Lathe2", item=5006, mode=5026, locale="de")
        await reader.wait(lambda: (r := reader.last("lathe-02", "item_state")) is not None and r.value == 5006,
                          what="Ausführung -> 5006")
        assert reader.last("lathe-02", "operation_mode").value == 5026  # type: ignore[union-attr]
        await reader.stop()


async def test_config_entry_overrides_and_completes_a_found_machine(opcua_server: OpcUaTestServer,
                                                                    tmp_path: Path) -> None:
    """Test that a configured machine is not announced again and gets the signals it lacks from discovery."""
    await opcua_server.start([VENDOR, DI, MACHINERY], machinery())  # type: ignore[arg-type]
    own = f"nsu={VENDOR};s=Mill1.MachineryItemState.CurrentState.Id"
    machines = [bound("Mill1", item_state=own)]
    async with OpcUaAdapter(source(opcua_server.url, discover="machinery"), machines, context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: len(reader.readings()) >= 4, what="four state readings")
        assert set(found(reader)) == {"lathe-02"}
        assert {r.signal for r in reader.readings("Mill1")} == {"item_state", "operation_mode"}
        await reader.stop()


async def test_server_without_machinery_namespace_finds_nothing(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that discovery on a server without the Machinery namespace opens fine and finds no machine."""
    async def empty(server: Server, ns: dict[str, int]) -> None:
        return None

    await opcua_server.start([VENDOR], empty)
    async with OpcUaAdapter(source(opcua_server.url, discover="machinery"), [], context(tmp_path)) as adapter:
        assert adapter._known == set()
