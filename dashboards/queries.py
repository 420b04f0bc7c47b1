"""The InfluxQL behind every panel.

Only what InfluxDB 3.x's InfluxQL also speaks (no SLIMIT/SOFFSET/SAMPLE/SHOW DATABASES, no
ELAPSED/INTEGRAL): time in state is summed from the roll-up fields of ``machine_availability``
(one point per machine per interval, timestamp = interval start), current state is the last
``machine_state`` point. Figures follow docs/DESIGN.md with known = busy + idle + setup + down
(the interval total minus offline):
utilization = busy / known, availability = (busy + idle) / known, free capacity = idle hours.

A ``where`` argument is an InfluxQL condition on tags: Grafana variables on the fleet boards,
a fixed machine list on the capacity boards (public dashboards allow no variables).
"""

from __future__ import annotations

import re

from collector.core.lineprotocol import MEASUREMENT_AVAILABILITY as AVAIL
from collector.core.lineprotocol import MEASUREMENT_STATE as STATES
from collector.core.model import State
from dashboards.states import ORDER

KNOWN = 'sum("busy_s") + sum("idle_s") + sum("setup_s") + sum("down_s")'
IDLE_CODE = State.IDLE.code

FLEET_WHERE = '"plant" =~ /^$plant$/ AND "line" =~ /^$line$/ AND "machine" =~ /^$machine$/'
MACHINE_WHERE = '"machine" =~ /^$machine$/'


_REGEX_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}/])")


def regex_literal(values: list[str]) -> str:
    """An InfluxQL regex matching exactly these tag values: ``/^(a|b)$/``. Only the characters
    special to Go's RE2 (and the ``/`` delimiter) are escaped: RE2 rejects escapes such as ``\\ ``."""
    escaped = "|".join(_REGEX_SPECIAL.sub(r"\\\1", v) for v in values)
    return f"/^({escaped})$/"


def machines_where(machines: list[str]) -> str:
    return f'"machine" =~ {regex_literal(sorted(machines))}'


# -- template variables ------------------------------------------------------------------------

def tag_values(key: str, where: str = "") -> str:
    cond = f" WHERE {where}" if where else ""
    return f'SHOW TAG VALUES FROM "{AVAIL}" WITH KEY = "{key}"{cond}'


# -- current state -----------------------------------------------------------------------------

def current_state(where: str, window: str) -> str:
    """Per machine (with its plant and line): last change (its time is "since"), the state, its reason."""
    return (f'SELECT last("state_code") AS "code", "state", "reason" FROM "{STATES}" '
            f'WHERE {where} AND time > now() - {window} GROUP BY "plant", "line", "machine"')


def current_state_public(where: str, window: str) -> str:
    """Like ``current_state`` without the reason: capacity boards show no internals."""
    return (f'SELECT last("state_code") AS "code", "state" FROM "{STATES}" '
            f'WHERE {where} AND time > now() - {window} GROUP BY "machine"')


def _last_codes(where: str, window: str) -> str:
    return (f'SELECT last("state_code") AS "code" FROM "{STATES}" '
            f'WHERE {where} AND time > now() - {window} GROUP BY "machine"')


def idle_now_count(where: str, window: str) -> str:
    return f'SELECT count("code") AS "idle" FROM ({_last_codes(where, window)}) WHERE "code" = {IDLE_CODE}'


def idle_now_list(where: str, window: str) -> str:
    """Machines idle now; the time column is when they became idle."""
    return f'SELECT "code" FROM ({_last_codes(where, window)}) WHERE "code" = {IDLE_CODE} GROUP BY "machine"'


# -- figures over the range --------------------------------------------------------------------

def figures(where: str, group_by: str | None) -> str:
    """Utilization and availability (0..1) and free capacity (idle hours) over ``$timeFilter``."""
    group = f' GROUP BY "{group_by}"' if group_by else ""
    return (f'SELECT sum("busy_s") / ({KNOWN}) AS "utilization", '
            f'(sum("busy_s") + sum("idle_s")) / ({KNOWN}) AS "availability", '
            f'sum("idle_s") / 3600 AS "free_h" '
            f'FROM "{AVAIL}" WHERE $timeFilter AND {where}{group}')


def hours_in_state(where: str) -> str:
    """Hours in each state over the range, one column per state."""
    cols = ", ".join(f'sum("{s.value}_s") / 3600 AS "{s.value}"' for s in ORDER)
    return f'SELECT {cols} FROM "{AVAIL}" WHERE $timeFilter AND {where}'


def hours_in_state_over_time(where: str) -> str:
    cols = ", ".join(f'sum("{s.value}_s") / 3600 AS "{s.value}"' for s in ORDER)
    return f'SELECT {cols} FROM "{AVAIL}" WHERE $timeFilter AND {where} GROUP BY time($__interval) fill(0)'


def hourly_idle_per_machine(where: str) -> str:
    """Idle and known seconds per machine and clock hour: the hour-of-week panel folds them into
    the week (Grafana transformations), as the collector's forecast does with its profile."""
    return (f'SELECT sum("idle_s") AS "idle_s", {KNOWN} AS "known_s" FROM "{AVAIL}" '
            f'WHERE $timeFilter AND {where} GROUP BY time(1h), "machine" fill(none)')


def idle_hours(where: str) -> str:
    return f'SELECT sum("idle_s") / 3600 AS "idle_h" FROM "{AVAIL}" WHERE $timeFilter AND {where}'


# -- changes -----------------------------------------------------------------------------------

def state_timeline(where: str) -> str:
    """Every change in the range; the state timeline holds each value until the next."""
    return f'SELECT "state" FROM "{STATES}" WHERE $timeFilter AND {where} GROUP BY "machine"'


def last_changes(where: str, limit: int = 50) -> str:
    """Newest first: the state entered, its reason, the state left and how long that lasted."""
    return (f'SELECT "state", "reason", "previous", "previous_s" FROM "{STATES}" '
            f'WHERE $timeFilter AND {where} ORDER BY time DESC LIMIT {limit}')
