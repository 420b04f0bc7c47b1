"""LeanProperties (adapters/mqtt/_lean_properties.py) decodes exactly as paho's Properties, and paho's
packet decoder still builds its PUBLISH properties through the name it replaces."""

from __future__ import annotations

import paho.mqtt._packet as paho_packet
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt._lean_properties import LeanProperties, install


def _publish_properties(expiry: int | None, content_type: str | None, user: list[tuple[str, str]],
                        alias: int | None) -> bytes:
    props = Properties(PacketTypes.PUBLISH)
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    if content_type is not None:
        props.ContentType = content_type
    if user:
        props.UserProperty = user
    if alias is not None:
        props.TopicAlias = alias
    packed: bytes = props.pack()
    return packed


def _attrs(props: Properties) -> dict[str, object]:
    return {k: v for k, v in vars(props).items() if k not in ("packetType", "types", "names", "properties")}


@given(st.none() | st.integers(0, 2**32 - 1), st.none() | st.text(max_size=20),
       st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3), st.none() | st.integers(1, 65535),
       st.binary(max_size=16))
def test_lean_properties_decode_like_paho(expiry: int | None, content_type: str | None, user: list[tuple[str, str]],
                                          alias: int | None, payload: bytes) -> None:
    """Test that any PUBLISH property block (none included) followed by a payload decodes to the same
    properties and the same length with LeanProperties as with paho's Properties, also when reused."""
    buffer = _publish_properties(expiry, content_type, user, alias) + payload
    lean = LeanProperties(PacketTypes.PUBLISH)
    lean.UserProperty = [("stale", "value")]  # unpack starts from a clean object, as paho's does
    try:
        theirs, their_len = Properties(PacketTypes.PUBLISH).unpack(buffer)
    except Exception as exc:  # e.g. paho refuses a NUL in a string it packed itself: so must we
        with pytest.raises(type(exc)):
            lean.unpack(buffer)
        return
    ours, our_len = lean.unpack(buffer)
    assert our_len == their_len
    assert _attrs(ours) == _attrs(theirs)
    assert ours.json() == theirs.json()


def test_paho_decodes_publish_through_the_replaced_name() -> None:
    """Test that paho's PUBLISH decoder looks up `Properties` in its _packet module (what `install`
    replaces): if a paho release stops doing so, this fails instead of the speed-up silently vanishing."""
    install()
    packet = b"\x00\x03a/b" + b"\x00\x07" + b"\x00" + b"payload"
    decoded = paho_packet.decode_publish(0x32, packet, paho_packet.MQTTProtocolVersion.MQTTv5)
    assert type(decoded.properties) is LeanProperties
    assert (decoded.topic, decoded.mid, decoded.payload) == (b"a/b", 7, b"payload")
