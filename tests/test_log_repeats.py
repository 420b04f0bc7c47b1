"""asyncua's repeated lines (a lost session logs from several places, 200 sources lose theirs
together) reach the log once a minute per message, with a count of those held back."""

from __future__ import annotations

import logging

from collector.logs import RepeatFilter


def record(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_each_message_once_a_minute_with_the_count_held_back() -> None:
    now = [0.0]
    repeats = RepeatFilter(("asyncua",), 60.0, clock=lambda: now[0])
    lost = "close_session was called but connection is closed"
    fault = "ServiceFault (%s) from server received in response to %s"
    assert repeats.filter(record("asyncua.client.ua_session.UaSession", lost))
    # the same template with other arguments is the same message; another template is not
    assert repeats.filter(record("asyncua.client.ua_client.UASocketProtocol", fault, "BadSessionClosed", "Publish"))
    for _ in range(199):
        now[0] += 0.1
        assert not repeats.filter(record("asyncua.client.ua_session.UaSession", lost))
        assert not repeats.filter(record("asyncua.client.ua_client.UASocketProtocol", fault, "BadNoSubscription", "x"))
    now[0] = 60.0
    again = record("asyncua.client.ua_session.UaSession", lost)
    assert repeats.filter(again)
    assert again.getMessage() == f"{lost} [199 more like this in the last 60s not logged]"
    faulted = record("asyncua.client.ua_client.UASocketProtocol", fault, "BadTimeout", "Read")
    assert repeats.filter(faulted)
    assert faulted.getMessage().startswith("ServiceFault (BadTimeout) from server received in response to Read "
                                           "[199 more")
    now[0] = 130.0
    quiet = record("asyncua.client.ua_session.UaSession", lost)
    assert repeats.filter(quiet) and quiet.getMessage() == lost  # nothing held back: no count


def test_other_loggers_and_debug_pass_untouched() -> None:
    repeats = RepeatFilter(("asyncua",), 60.0, clock=lambda: 0.0)
    for _ in range(3):
        assert repeats.filter(record("collector.engine", "source %s unreachable", "s001"))
        assert repeats.filter(record("asyncuax", "not asyncua's"))
        assert repeats.filter(record("asyncua.client", "asked for", level=logging.DEBUG))


def test_messages_formatted_before_logging_do_not_grow_without_bound() -> None:
    now = [0.0]
    repeats = RepeatFilter(("asyncua",), 60.0, clock=lambda: now[0])
    for i in range(5000):
        now[0] = i * 0.1  # a new text every 0.1 s, for 500 s
        assert repeats.filter(record("asyncua.client", f"Received data for unknown subscription {i}"))
    assert len(repeats._seen) <= 1001 + 600
