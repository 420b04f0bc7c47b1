"""A Sparkplug 3.0 edge node that waits for its Primary Host Application, built with pysparkplug
(Apache-2.0, paho-mqtt 1.6), a library the collector does not use. Run by the tests with the
Python of its own venv (tests/fixtures/_foreign.py), never imported by them.

    python spb_waiting_edge.py HOST PORT HOST_ID GROUP NODE DEVICE STATE[,STATE...]
    python spb_waiting_edge.py --capture          # its payloads as hex (tests/golden/mqtt/)

What the spec asks of an edge node configured with a primary host: subscribe to
``spBv1.0/STATE/<host_id>`` and publish no NBIRTH/DBIRTH before that host says it is online;
ignore a STATE older than the last one seen; on an offline STATE, end the session (NDEATH) and
wait again. pysparkplug parses the topic and the STATE payload (its ``State`` model insists on
``online`` and ``timestamp``); its EdgeNode publishes the births (with bdSeq, seq, will) and the
data. The waiting is these few lines, because no edge library on PyPI or npm that installs here
does it itself (see adapters/mqtt/README.md).

One JSON line per event on stdout:
  {"event": "waiting"}                                  subscribed to STATE, nothing published
  {"event": "state", "online": b, "timestamp": ms}      a STATE of our host (older ones skipped)
  {"topic": ".../DBIRTH/...", "state": n, "ts_ms": t}   a birth or data message sent
  {"event": "stopped"}                                  session ended after an offline STATE
The script ends after the host went offline once it had sent all states (or on a signal).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pysparkplug import (
    Client,
    DataType,
    DBirth,
    DData,
    Device,
    EdgeNode,
    Message,
    MessageType,
    Metric,
    NBirth,
    QoS,
    State,
    Topic,
)


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(host: str, port: int, host_id: str, group: str, node: str, device: str, states: list[int]) -> None:
    online = threading.Event()
    done = threading.Event()
    last_ts = [-1]

    def on_state(_: Client, message: Message) -> None:
        payload = message.payload
        assert isinstance(payload, State)
        if payload.timestamp < last_ts[0]:
            return  # an older STATE than one already seen: the spec says ignore it
        last_ts[0] = payload.timestamp
        say(event="state", online=payload.online, timestamp=payload.timestamp)
        if payload.online:
            online.set()
        else:
            online.clear()
            done.set()

    watcher = Client(client_id=f"{node}-state-watch")
    subscribed = threading.Event()
    watcher._client.on_subscribe = lambda *_: subscribed.set()  # paho's hook: know the SUBACK came
    watcher.subscribe(Topic(message_type=MessageType.STATE, sparkplug_host_id=host_id), QoS.AT_LEAST_ONCE, on_state)
    watcher.connect(host, port=port, blocking=False)
    if not subscribed.wait(10):
        raise SystemExit(f"cannot subscribe at {host}:{port}")
    say(event="waiting")
    if not online.wait(120):
        raise SystemExit("the primary host never came online")

    now = int(time.time() * 1000)
    edge = EdgeNode(group, node, [Metric(timestamp=now, name="Uptime", datatype=DataType.DOUBLE, value=12.5)])
    first = int(time.time() * 1000)
    edge.register(Device(device, [
        Metric(timestamp=first, name="PackML/State", datatype=DataType.INT32, value=states[0]),
        Metric(timestamp=first, name="PackML/UnitMode", datatype=DataType.INT32, value=1),  # Production
    ]))
    edge.connect(host, port=port, blocking=False)  # its on-connect publishes NBIRTH, then DBIRTH
    deadline = time.monotonic() + 10
    while not edge._connected:  # set by its on-connect, before the births
        if time.monotonic() > deadline:
            raise SystemExit(f"cannot connect to {host}:{port}")
        time.sleep(0.02)
    say(topic=f"spBv1.0/{group}/DBIRTH/{node}/{device}", state=states[0], ts_ms=first)
    for state in states[1:]:
        time.sleep(0.25)  # a machine's state lasts a while: distinct, ordered stamps
        stamp = int(time.time() * 1000)
        edge.update_device(device, [Metric(timestamp=stamp, name="PackML/State", datatype=DataType.INT32,
                                           value=state)])
        say(topic=f"spBv1.0/{group}/DDATA/{node}/{device}", state=state, ts_ms=stamp)
    say(event="sent")
    done.wait(120)
    edge.disconnect()  # NDEATH, then DISCONNECT: the host went away
    say(event="stopped")
    watcher.disconnect()


def capture() -> None:
    """NBIRTH, DBIRTH and DDATA as this library encodes them, at fixed times (ms)."""
    t = 1_800_000_001_000

    def metric(name: str, value: int, ts: int) -> Metric:
        return Metric(timestamp=ts, name=name, datatype=DataType.INT32, value=value)

    nbirth = NBirth(timestamp=t, seq=0, metrics=(
        Metric(timestamp=t, name="Uptime", datatype=DataType.DOUBLE, value=12.5),
        Metric(timestamp=t, name="bdSeq", datatype=DataType.INT64, value=0)))
    dbirth = DBirth(timestamp=t, seq=1, metrics=(metric("PackML/State", 4, t), metric("PackML/UnitMode", 1, t)))
    ddata = DData(timestamp=t + 2000, seq=2, metrics=(metric("PackML/State", 6, t + 1500),))
    print(json.dumps({name: msg.encode(include_dtypes=True).hex()
                      for name, msg in (("nbirth", nbirth), ("dbirth", dbirth), ("ddata", ddata))}))


if __name__ == "__main__":
    if sys.argv[1] == "--capture":
        capture()
        raise SystemExit
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6],
         [int(s) for s in sys.argv[7].split(",")])
