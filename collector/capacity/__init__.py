"""The capacity feed: what the public machines offer, when they are usually free, shared over
HTTP (``/api/v1/capacity``, the ``/capacity`` page) and MQTT (retained ``capacity/<plant>/<machine>``).

Its settings are the config's (collector/capacity_settings.py): the package sits above the
config and the machines and imports them, never the other way (an import-linter contract).
Modules: ``profile`` (the hour-of-week store in SQLite), ``forecast``
(free windows from a profile, pure), ``records`` (the public record of a machine, filters),
``api`` (HTTP routes, OpenAPI), ``schema`` (JSON Schemas of the records), ``feed`` (MQTT),
``topics`` (the feed's topic names, shared with the platform side, ``collector.exchange``),
``service`` (ties them to a running collector, seen through the ``Running`` protocol: the
package never imports the engine). Only machines with ``public: true`` are ever
recorded, served or published.
"""
