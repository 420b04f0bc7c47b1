"""The project's own exceptions, one tree. Library errors are wrapped at the boundary with
``raise ... from exc``; anything outside this tree reaching the engine is a bug, logged with its
traceback (``collector.engine``).

    CollectorError
    ├── ConfigError                  a config that cannot run: file, line, field path, expected
    ├── RuleError (ValueError)       a rule condition that does not parse or is not allowed
    ├── ResolveError (ValueError)    a machine whose profile or signals do not resolve
    ├── SourceError                  a source unreachable or lost: the supervisor reconnects
    │   ├── UnknownNodes             OPC UA: configured nodes the server does not have
    │   ├── UntrustedServerCertificate
    │   └── _Restarted               MTConnect: the agent's instanceId changed (handled in the adapter)
    ├── BadInputError (ValueError)   one message that cannot be decoded: counted, dropped
    │   ├── PathError                a JSON path that is not valid JMESPath
    │   ├── AddressError             an OPC UA node address that does not parse
    │   ├── DocumentError            an MTConnect document that cannot be read
    │   ├── FilterError              a capacity API filter it cannot use (answered 400)
    │   ├── QueryError               an exchange query it cannot use (answered 400)
    │   ├── _Problem                 an AAS API request it cannot answer (400, 404)
    │   └── NotRepresentable         a machine whose ids are too long for an AAS: no shell
    ├── WriteError                   InfluxDB refused a write or could not be reached
    ├── SchemaError                  an outbox file written by a newer release
    └── PushError                    Grafana: Unreachable, Unauthorized, TooOld (its version)
"""

from __future__ import annotations


class CollectorError(Exception):
    """The root of every error this project raises on purpose."""


class BadInputError(CollectorError, ValueError):
    """Input from the network or a file that cannot be used; ``kind`` is the bad-input kind."""
