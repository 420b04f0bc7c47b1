"""The ``dashboards:`` section of the config: data source, folder, and how capacity boards are cut."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from collector.core.strict import Strict


class DashboardSettings(Strict):

    datasource_uid: str = Field(
        "machine-availability-influxdb", pattern=r"^[A-Za-z0-9._-]{1,40}$",
        description=("UID of the InfluxDB data source the boards query. The capacity boards name it directly "
                     "(public dashboards allow no variables); provisioning and `dashboards push` create it."))
    datasource_name: str = Field("Machine availability (InfluxDB)", description="Display name of that data source.")
    folder_uid: str = Field("machine-availability", pattern=r"^[A-Za-z0-9._-]{1,40}$",
                            description="UID of the Grafana folder `dashboards push` puts the boards in.")
    folder_title: str = Field("Machine availability", description="Title of that folder.")
    share_by: Literal["plant", "line"] = Field(
        "plant", description="One capacity-sharing board per plant, or per line of each plant.")
    current_window: str = Field(
        "30d", pattern=r"^[1-9][0-9]*[mhdw]$",
        description=("How far back the current-state panels look for a machine's last state change "
                     "(InfluxQL duration). A machine whose last change is older does not show as current."))
    refresh: str = Field("30s", pattern=r"^[1-9][0-9]*[smh]$", description="Auto-refresh of the boards.")
