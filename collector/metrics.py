"""``/metrics``: the engine's figures in the Prometheus text format, through ``prometheus-client``.

The figures are read from the engine at scrape time (a custom collector), so nothing is kept
twice; the library writes the text, escaping label values (a machine id may hold quotes,
backslashes, newlines: all legal in an MQTT topic level).

    collector_machine_state{machine, state}     1 for the machine's current state, else 0
    collector_machines{source}                  machines tracked per source (discovered included)
    collector_events_total                      events the engine processed
    collector_state_changes_total, collector_intervals_total, collector_lines_written_total
    collector_bad_input_total{source, kind}     bad input per source and kind (see docs/RELIABILITY.md)
    collector_late_readings_total{why}          readings clamped, out of order, replayed, or duplicates dropped
    collector_readings_held                     readings waiting to be sorted (collector/reorder.py)
    collector_mqtt_redeliveries_total{source}   messages the broker marked as sent before (MQTT DUP)
    collector_commits_total, collector_other_shard_total, collector_adapter_errors_total{source}
    collector_source_up{source}                 1 while the source is connected
    collector_source_reconnects_total{source}
    collector_tracker_gaps_bridged_total        time gaps bridged in one step (tracker.max_gap)
    collector_clock_steps_total                 steps of the system clock (not taken as elapsed time)
    collector_clock_last_step_seconds           the last step's size (+ forward, - back)
    collector_clock_synchronized                1 when the kernel says the clock is synchronized
    collector_clock_waiting_for_sync            1 while nothing is read: waiting for clock.require_sync
    collector_outbox_*                          the sink's figures (depth, oldest age, retries, ...)
    collector_outbox_write_latency_seconds      the last write's duration
    collector_outbox_write_duration_seconds     histogram of the writes' durations
    collector_output_*{output}                  per output: depth, oldest age, points written,
                                                filtered, retries, dead-lettered, dropped, last
                                                write duration, link up
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.core.model import State
from collector.sinks import Measured

if TYPE_CHECKING:
    from collector.engine import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        stats = engine.stats
        state = GaugeMetricFamily("collector_machine_state", "1 for the machine's current state, 0 for the others.",
                                  labels=["machine", "state"])
        for mid, st in sorted(engine.snapshot().items()):
            for s in State:
                state.add_metric([mid, s.value], int(st.state is s))
        yield state
        per_source = GaugeMetricFamily("collector_machines", "Machines tracked, per source.", labels=["source"])
        counts: dict[str, int] = {}
        for machine in engine.machines.values():
            counts[machine.source] = counts.get(machine.source, 0) + 1
        for source, n in sorted(counts.items()):
            per_source.add_metric([source], n)
        yield per_source
        yield CounterMetricFamily("collector_events", "Events the engine processed.", value=stats.events)
        yield CounterMetricFamily("collector_state_changes", "State changes written.", value=stats.state_changes)
        yield CounterMetricFamily("collector_intervals", "Roll-up intervals written.", value=stats.intervals)
        yield CounterMetricFamily("collector_lines_written", "Line protocol lines handed to the sink.",
                                  value=stats.lines_written)
        bad = CounterMetricFamily("collector_bad_input", "Bad input, counted and dropped.", labels=["source", "kind"])
        for (source, kind), n in sorted(engine.bad_input.counts.items()):
            bad.add_metric([source, kind], n)
        yield bad
        late = CounterMetricFamily("collector_late_readings", "Readings not placed at their own time, by why "
                                   "(clamped, out_of_order, replayed; duplicate: a copy of a held reading, dropped).",
                                   labels=["why"])
        for why, n in sorted(engine.late_readings().items()):
            late.add_metric([why], n)
        yield late
        yield GaugeMetricFamily("collector_readings_held", "Readings held to be sorted (reorder_window, "
                                "redelivery_window).", value=engine.fleet.reorder.held())
        redelivered = CounterMetricFamily("collector_mqtt_redeliveries", "Messages the broker marked as sent "
                                          "before (MQTT DUP), per source.", labels=["source"])
        for source, n in sorted(engine.fleet.reorder.redeliveries.items()):
            redelivered.add_metric([source], n)
        yield redelivered
        yield CounterMetricFamily("collector_commits", "Outbox commits (points and tracker state together).",
                                  value=stats.commits)
        yield CounterMetricFamily("collector_other_shard", "Events for machines another shard tracks.",
                                  value=stats.other_shard)
        errors = CounterMetricFamily("collector_adapter_errors", "Unexpected adapter failures (bugs), per source.",
                                     labels=["source"])
        for source, n in sorted(stats.adapter_errors.items()):
            errors.add_metric([source], n)
        yield errors
        up = GaugeMetricFamily("collector_source_up", "1 while the source is connected.", labels=["source"])
        for source, online in sorted(stats.source_online.items()):
            up.add_metric([source], int(online))
        yield up
        reconnects = CounterMetricFamily("collector_source_reconnects", "Times the source was lost and reopened.",
                                         labels=["source"])
        for source, n in sorted(stats.reconnects.items()):
            reconnects.add_metric([source], n)
        yield reconnects
        yield CounterMetricFamily("collector_tracker_gaps_bridged",
                                  "Time gaps longer than tracker.max_gap bridged in one step.",
                                  value=sum(t.gaps_bridged for t in engine.trackers.values()))
        yield from _clock_metrics(engine)
        if isinstance(engine.sink, Measured):
            yield from _sink_metrics(engine.sink)


def _sink_metrics(sink: Measured) -> Iterator[Metric]:
    for key, value in sorted(sink.stats().items()):
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key.endswith("_total"):
            yield CounterMetricFamily(f"collector_outbox_{key[:-len('_total')]}", f"Outbox: {key}.", value=value)
        else:
            yield GaugeMetricFamily(f"collector_outbox_{key}", f"Outbox: {key}.", value=value)
    yield from _per_output(sink)
    buckets, total = sink.write_durations()
    yield HistogramMetricFamily("collector_outbox_write_duration_seconds",
                                "Durations of the successful writes to InfluxDB.",
                                buckets=[("+Inf" if math.isinf(le) else repr(le), n) for le, n in buckets],
                                sum_value=total)


def _per_output(sink: Measured) -> Iterator[Metric]:
    """One family per figure, one sample per output (label ``output``)."""
    per: dict[str, dict[str, float]] = sink.output_stats()
    keys = sorted({k for figures in per.values() for k in figures})
    for key in keys:
        total = key.endswith("_total")
        name = f"collector_output_{key[:-len('_total')] if total else key}"
        family = (CounterMetricFamily if total else GaugeMetricFamily)(name, f"Per output: {key}.", labels=["output"])
        for output, figures in sorted(per.items()):
            if key in figures:
                family.add_metric([output], figures[key])
        yield family


def _clock_metrics(engine: Engine) -> Iterator[Metric]:
    wall = engine.wall
    if wall is not None:
        yield CounterMetricFamily("collector_clock_steps", "Steps of the system clock, each logged with its size "
                                  "and never taken as elapsed time.", value=wall.steps)
        last = wall.last_step
        yield GaugeMetricFamily("collector_clock_last_step_seconds", "The last step of the system clock "
                                "(positive: forward).", value=0.0 if last is None else last.delta_ns / 1e9)
    synced = engine.sync.synchronized()
    if synced is not None:
        yield GaugeMetricFamily("collector_clock_synchronized", "1 when the kernel reports the system clock "
                                "synchronized (adjtimex).", value=int(synced))
    yield GaugeMetricFamily("collector_clock_waiting_for_sync", "1 while the collector waits for a synchronized "
                            "clock (clock.require_sync): nothing is read or written.",
                            value=int(engine.sync.reason is not None))


def metrics_text(engine: Engine) -> bytes:
    """The whole scrape, in the Prometheus text format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return generate_latest(registry)
