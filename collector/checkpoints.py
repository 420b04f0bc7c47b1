"""Carrying on across restarts: the outbox holds every tracker's last committed state (a crash)
or its state at the last clean stop, and a start resumes each machine from it.

A checkpoint for a machine not tracked yet (one its source discovers) waits until the machine
is found. A machine whose source does not deliver again what was published while the collector
was away (anything but a persistent MQTT session) is offline from the checkpoint on: nothing of
that time comes back, so saying otherwise would be a guess.
"""

from __future__ import annotations

from typing import Any

from adapters.base import SourceConfig
from collector.core.model import Output
from collector.sinks import Resumable, Sink
from collector.tracker import Tracker

NOT_RUNNING = "collector was not running"


class Checkpoints:
    def __init__(self) -> None:
        # machine -> (tracker snapshot, when it was committed): what no tracker has taken yet.
        self.waiting: dict[str, tuple[dict[str, Any], int]] = {}

    async def load(self, sink: Sink) -> int:
        """Read the checkpoints a sink kept (none if it keeps none); returns how many."""
        if not isinstance(sink, Resumable):
            return 0
        saved = await sink.load_state()
        self.waiting = dict(saved) if saved else {}
        return len(self.waiting)

    def resume(self, mid: str, tracker: Tracker, source: SourceConfig | None) -> list[Output] | None:
        """Carry ``tracker`` on from machine ``mid``'s checkpoint, if one waits for it: None when
        there is none (or it does not fit the tracker), else what the time away was (offline from
        the checkpoint, for a source that does not deliver it again; see the module docstring)."""
        saved = self.waiting.pop(mid, None)
        if saved is None:
            return None
        snap, saved_ns = saved
        if not tracker.resume(snap):
            return None
        if source is not None and not source.redelivers():
            return tracker.connectivity(False, saved_ns, NOT_RUNNING)
        return []


__all__ = ["NOT_RUNNING", "Checkpoints"]
