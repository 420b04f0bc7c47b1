"""``collector demo``'s first look: weeks of the simulated plant's history, generated in virtual
time through the tracker and the capacity profile store, so /capacity shows free hours, usual
free windows and its heatmap at once (collector/simulate/history.py, adapters/simulate/week.py)."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import time
import zlib
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from adapters.simulate.adapter import WEEK_SALT
from adapters.simulate.week import BUSY_SHARE, HOURS_PER_WEEK, SLACK_SHARE, make_week
from collector.capacity.forecast import forecast
from collector.capacity.service import Capacity
from collector.configfile import LoadedConfig, load_config
from collector.core.model import NS_PER_S
from collector.demo import with_shifts
from collector.simulate.history import WEEK_S, simulate_history
from tests.browser import chromium
from tests.fixtures._proc import COLLECTOR, collector_env, first_match

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
END_NS = 1_796_000_000 * NS_PER_S  # a fixed "now" (2026-11-29, a Sunday): the same history every run


def _plant(decay: float | None = None) -> tuple[LoadedConfig, Capacity]:
    loaded = with_shifts(load_config(EXAMPLE))
    settings = loaded.config.capacity
    if decay is not None:
        settings = settings.model_copy(update={"decay": decay})
    return loaded, Capacity(settings, None)


def _public(loaded: LoadedConfig) -> list[str]:
    return sorted(m.info.id for m in loaded.machines if m.info.public)


def test_history_rolls_up_every_second_of_its_weeks_into_the_profile() -> None:
    """Test that with no decay the profile of each public machine holds exactly the roll-ups'
    time: from the interval holding the history's start to the last boundary before its end,
    every nanosecond once (the tracker's intervals add up, the store counts each once)."""
    loaded, capacity = _plant(decay=1.0)
    stats = simulate_history(loaded, capacity, end_ns=END_NS, weeks=1)
    assert stats.machines == len(_public(loaded)) == 7
    interval = int(loaded.config.tracker.interval * NS_PER_S)
    start = END_NS - WEEK_S * NS_PER_S
    expected_s = ((END_NS - END_NS % interval) - (start - start % interval)) / NS_PER_S
    for mid in _public(loaded):
        total = sum(sum(bucket.values()) for bucket in capacity.store.profile(mid))
        assert abs(total - expected_s) < 1e-3, (mid, total, expected_s)
    assert capacity.store.replayed == 0
    capacity.close()


def test_history_is_seeded_and_follows_each_machines_week() -> None:
    """Test that the same seed and end give the same profile, that every public machine has free
    hours in the last 7 days and at least one usual free window, and that the shifts with few
    orders are the ones the forecast finds free (the week goes through the same arithmetic)."""
    loaded, first = _plant()
    simulate_history(loaded, first, end_ns=END_NS, weeks=2)
    again_loaded, again = _plant()
    simulate_history(again_loaded, again, end_ns=END_NS, weeks=2)
    zone = ZoneInfo(loaded.config.capacity.timezone)
    now = dt.datetime.fromtimestamp(END_NS / NS_PER_S, zone)
    source = loaded.config.sources[0]
    for mid in _public(loaded):
        assert first.store.profile(mid) == again.store.profile(mid)
        assert first.store.idle_hours_since(mid, END_NS - 7 * 86_400 * NS_PER_S) > 1.0, mid
        fc = forecast(first.store.profile(mid), now, loaded.config.capacity.threshold)
        assert fc.windows, f"{mid}: no usual free window"
        # The machine's week, seeded as the adapter seeds it.
        week = make_week(random.Random(((source.seed or 0) ^ zlib.crc32(mid.encode())) ^ WEEK_SALT), zone)
        by_how = {(fc.start_hour_of_week + i) % HOURS_PER_WEEK: s for i, s in enumerate(fc.shares)}
        slack = [by_how[h] for h in range(HOURS_PER_WEEK) if week.shares[h] == SLACK_SHARE]
        busy = [by_how[h] for h in range(HOURS_PER_WEEK) if week.shares[h] == BUSY_SHARE]
        off = [by_how[h] for h in range(HOURS_PER_WEEK) if week.shares[h] is None]
        assert slack and sum(s or 0 for s in slack) / len(slack) > 0.6, mid
        assert sum(s or 0 for s in busy) / len(busy) < 0.4, mid
        # Switched off: no known time in those hours, so never a free window there (the first
        # minutes of an hour may still hold a batch that ran over).
        assert all(s is None or s < 0.5 for s in off), mid
    first.close()
    again.close()


@given(st.integers(min_value=1_600_000_000, max_value=2_000_000_000), st.integers(0, 2**32 - 1),
       st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata"]))
def test_a_weeks_hour_is_the_local_hour_of_the_week(ts: int, seed: int, zone_name: str) -> None:
    """Test that Week.hour gives the share of the local hour of the week holding the instant and
    that hour's end, in any time zone (half-hour offsets, DST changes included)."""
    zone = ZoneInfo(zone_name)
    week = make_week(random.Random(seed), zone)
    share, end = week.hour(ts + 0.5)
    local = dt.datetime.fromtimestamp(ts + 0.5, zone)
    assert share == week.shares[local.weekday() * 24 + local.hour]
    assert ts + 0.5 < end <= ts + 0.5 + 3600
    after = dt.datetime.fromtimestamp(end, zone)
    assert after.minute == 0 and after.second == 0 and (after.hour != local.hour or after.date() != local.date())


def test_demo_capacity_page_shows_history_within_ten_seconds(tmp_path: Path) -> None:
    """Test the first look: headless Chromium on the demo's /capacity shows, within 10 s of the
    demo's start, non-zero free hours over 7 days and a usual free window for every public
    machine, a heatmap with usually-free hours, and the note that it is simulated."""
    loaded = load_config(EXAMPLE)
    public = _public(loaded)
    with chromium() as driver:  # the browser's own start is not the demo's
        started = time.monotonic()
        proc = subprocess.Popen([*COLLECTOR, "demo", "--no-board", "--for", "60"], cwd=tmp_path,
                                env=collector_env(COLLECTOR_HTTP__PORT="0"), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            driver.get(first_match(proc, r"(http://\S+/capacity)", "the demo served its page"))
            script = """
              const rows = [...document.querySelectorAll('#machines tbody tr')].map(tr => {
                const td = tr.querySelectorAll('td');
                return [tr.dataset.machine, parseFloat(td[7].textContent), td[8].textContent];
              });
              const heat = [...document.querySelectorAll('#heat td.cell')]
                .map(td => parseFloat(td.title.split('·')[1]));
              return [rows, heat, !document.getElementById('simulated').hidden];"""
            while True:
                rows, heat, note = driver.execute_script(script)
                shown = {m: (free7, window) for m, free7, window in rows}
                if (sorted(shown) == public and all(f > 0 and w != "–" for f, w in shown.values())
                        and len(heat) == 168 and any(v > 0 for v in heat) and note):
                    break
                assert time.monotonic() - started < 10, f"after 10 s: {rows}, heat {heat[:5]}, note {note}"
                time.sleep(0.1)  # polling the page until the deadline above
            elapsed = time.monotonic() - started
            assert elapsed < 10
            print(f"history shown {elapsed:.1f} s after the demo's start")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
