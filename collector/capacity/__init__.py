"""The capacity feed: what the public machines offer, when they are usually free, shared over
HTTP (``/api/v1/capacity``, the ``/capacity`` page) and MQTT (retained ``capacity/<plant>/<machine>``).

Modules: ``config`` (settings), ``profile`` (the hour-of-week store in SQLite), ``forecast``
(free windows from a profile, pure), ``records`` (the public record of a machine, filters),
``api`` (HTTP routes, OpenAPI), ``schema`` (JSON Schemas of the records), ``feed`` (MQTT),
``topics`` (the feed's topic names, shared with the platform side, ``collector.exchange``),
``service`` (ties them to a running engine). Only machines with ``public: true`` are ever
recorded, served or published.
"""
