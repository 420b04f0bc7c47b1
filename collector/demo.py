"""``collector demo``: the simulated plant, the collector on it, and a live terminal board."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from adapters.simulate.config import SimulateSource
from collector.capacity.service import Capacity, compose
from collector.configfile import LoadedConfig
from collector.core.figures import availability, idle_hours, utilization
from collector.core.model import NS_PER_S, Output, State, StateChange, now_ns
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from collector.tracker import TrackerStatus

log = logging.getLogger(__name__)

COLOURS = {State.BUSY: "green", State.IDLE: "bold yellow", State.SETUP: "blue", State.DOWN: "bold red",
           State.OFFLINE: "grey50"}


def _ago(ns: int) -> str:
    s = max(0, ns // NS_PER_S)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:5.1f}%"


def render(snapshot: dict[str, TrackerStatus], now_ns: int, title: str) -> Group:
    counts = {s: 0 for s in State}
    for st in snapshot.values():
        counts[st.state] += 1
    header = Text(f"{title}   ")
    for state in State:
        header.append(f" {state.value} {counts[state]} ", style=COLOURS[state])
    idle_now = sorted(mid for mid, st in snapshot.items() if st.state is State.IDLE)
    table = Table(expand=False, header_style="bold")
    for col in ("machine", "line", "state", "since", "reason", "util.", "avail.", "idle h"):
        table.add_column(col, justify="right" if col in ("since", "util.", "avail.", "idle h") else "left",
                         no_wrap=True, overflow="ellipsis", max_width=44 if col == "reason" else None)
    for mid in sorted(snapshot):
        st = snapshot[mid]
        table.add_row(mid, st.machine.line, Text(st.state.value, style=COLOURS[st.state]),
                      _ago(now_ns - st.since_ns), st.reason, _pct(utilization(st.totals_ns)),
                      _pct(availability(st.totals_ns)), f"{idle_hours(st.totals_ns):.2f}")
    footer = Text(f"idle now (capacity to share): {', '.join(idle_now) or 'none'}   Ctrl-C stops",
                  style="yellow")
    return Group(header, table, footer)


async def _serve(stack: contextlib.AsyncExitStack, engine: Engine, capacity: Capacity,
                 loaded: LoadedConfig) -> int | None:
    """The status server with the capacity page; on any free port when the configured one is taken
    (a collector may already run here)."""
    settings = loaded.config.http
    try:
        return await stack.enter_async_context(serve_status(engine, settings, capacity=capacity))
    except OSError as exc:
        log.warning("port %d: %s; the demo serves on a free port instead", settings.port, exc)
        return await stack.enter_async_context(serve_status(engine, settings.model_copy(update={"port": 0}),
                                                            capacity=capacity))


def with_shifts(loaded: LoadedConfig) -> LoadedConfig:
    """The demo's simulated machines follow a plant's week (adapters/simulate/week.py), in the
    capacity section's time zone, live and in the generated history alike."""
    zone = loaded.config.capacity.timezone
    loaded.config.sources = [s.model_copy(update={"shifts": True, "timezone": zone})
                             if isinstance(s, SimulateSource) else s for s in loaded.config.sources]
    return loaded


async def run_demo(loaded: LoadedConfig, *, speed: float | None, duration: float | None, board: bool,
                   install_stop: Callable[[asyncio.Event, float | None], None], history_weeks: float = 0.0) -> int:
    loaded = with_shifts(loaded)
    capacity = Capacity(loaded.config.capacity, None)  # the demo starts fresh every time
    if history_weeks > 0:
        # At the plant's own pace (the time-lapse is for the live part), before the engine starts:
        # its first roll-up then follows the history's last one.
        from collector.simulate.history import simulate_history

        stats = simulate_history(loaded, capacity, end_ns=now_ns(), weeks=history_weeks)
        print(f"simulated history: {history_weeks:g} week(s) of {stats.machines} public machine(s) in "
              f"{stats.seconds:.1f} s (marked `simulated` in the capacity records and on the page)", flush=True)
    if speed is not None:  # a time-lapse compresses the machines' time and the tracker's alike
        loaded.config.sources = [
            s.model_copy(update={"speed": speed, "publish_every": s.publish_every / speed})
            if isinstance(s, SimulateSource) else s for s in loaded.config.sources]
        loaded = dataclasses.replace(loaded, machines=[
            dataclasses.replace(m, debounce_s=m.debounce_s / speed,
                                stale_after_s=None if m.stale_after_s is None else m.stale_after_s / speed)
            for m in loaded.machines])
    sink = NullSink()

    def log_changes(out: Sequence[Output]) -> None:
        for o in out:
            if isinstance(o, StateChange):
                log.info("%-10s %-7s -> %-7s after %6.1fs  (%s)", o.machine.id, o.previous.value, o.state.value,
                         o.previous_ns / NS_PER_S, o.reason)

    engine = Engine(loaded, sink, on_output=compose(capacity.on_output, None if board else log_changes))
    capacity.bind(engine)
    stop = asyncio.Event()
    install_stop(stop, duration)
    title = f"plant {loaded.config.site.plant}: {len(engine.trackers)} machines"
    async with contextlib.AsyncExitStack() as stack:
        port = await _serve(stack, engine, capacity, loaded)
        if port is not None:
            host = loaded.config.http.host
            print(f"capacity page (shareable, no Grafana needed): http://{host}:{port}/capacity  "
                  f"· API http://{host}:{port}/api/v1/capacity", flush=True)
        runner = asyncio.create_task(engine.run(stop))
        if board:
            console = Console()
            with Live(render(engine.snapshot(), engine.clock(), title), console=console, refresh_per_second=4,
                      screen=False) as live:
                while not runner.done():
                    live.update(render(engine.snapshot(), engine.clock(), title))
                    await asyncio.wait([runner], timeout=0.5)
            if not console.is_terminal:  # a terminal gets its newline from Live; a pipe or file does not
                console.line()
        await runner
    capacity.close()
    print(f"demo stopped: {engine.stats.state_changes} state changes, {sink.count} points produced")
    return 0
