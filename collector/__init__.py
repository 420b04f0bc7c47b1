"""Machine availability collector: signals in, canonical machine states out.

Public surface lives in the modules named for what they hold:
``collector.core.model`` (events and states), ``collector.config`` (the YAML models),
``collector.rules`` (signal -> state), ``collector.tracker`` (durations and roll-ups),
``collector.core.lineprotocol`` (InfluxDB encoding), ``collector.engine`` (the pipeline).
"""

__version__ = "0.1.0"
