"""The platform side of the capacity feed: ``collector exchange`` gathers every plant's retained
offers from the platform's broker, checks them, and serves them searchable (API, page, metrics).

Modules: ``index`` (pure: an MQTT message in, the index updated; validation against the
published JSON Schema), ``query`` (pure: the filters and the demand search), ``models`` (the
API's response models and its OpenAPI document), ``app`` (the Starlette route table),
``subscriber`` (the paho transport feeding the index), ``command`` (the CLI; it serves the app
on the collector's own HTTP server, ``collector.httpserver``).
It keeps no state of its own: the broker's retained messages are the state. It imports neither
the engine, the adapters nor the influx package (a layer contract in pyproject.toml).
"""
