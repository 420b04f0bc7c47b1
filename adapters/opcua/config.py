"""``type: opcua``: one OPC UA server, one session."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.base import SourceConfig
from collector.core.durations import Duration

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class OpcUaSource(SourceConfig):
    type: Literal["opcua"] = Field(description="An OPC UA server, read through subscriptions (no polling).")
    endpoint: str = Field(description="Endpoint URL of the server.", examples=["opc.tcp://10.0.0.5:4840"],
                          pattern=r"^opc\.tcp://")
    timeout: Duration = Field(5.0, gt=0, description="How long one request (connect, browse, read) may take.")
    # Each keep-alive is a publish round trip through asyncua: 200 sessions took 8.4 % of a core
    # at 2 s, 6.5 % at 5 s (bench/opcua_fleet.py). A closed connection is noticed at once anyway.
    keepalive: Duration = Field(
        5.0, gt=0,
        description=("Keep-alive period: the server reports at least this often and the collector checks the "
                     "session this often; a lost session is detected within three periods (a closed connection "
                     "at once)."))
    session_timeout: Duration = Field(60.0, gt=0, description="Session timeout requested from the server.")
    publishing_interval: Duration = Field(0.5, gt=0, description="How often the server sends the changes it collected.")
    sampling_interval: Duration | None = Field(
        None, description="How often the server samples each node; default: the publishing interval.")
    queue_size: int = Field(
        10, ge=1,
        description=("Changes the server keeps per node between two publishes; more than one keeps short "
                     "states (busy for 100 ms) that would otherwise be lost."))
    deadband: float | None = Field(
        None, ge=0, description="Absolute deadband for numeric nodes: smaller changes are not reported.")
    timestamps: Literal["source", "arrival"] = Field(
        "source", description=("Time of a value: `source`, the server's source timestamp (else its server timestamp); "
                               "`arrival`, when the collector received it (for servers with a wrong clock)."))
    uncertain: Literal["good", "bad"] = Field(
        "bad", description="How an `Uncertain` status counts: `bad` makes the machine offline with the status as reason.")
    max_items_per_subscription: int = Field(
        1000, ge=1, description="Monitored items per subscription; more nodes are split across subscriptions.")
    security_policy: SecurityPolicy = Field("None", description="Security policy of the endpoint to use.")
    security_mode: Literal["Sign", "SignAndEncrypt"] = Field(
        "SignAndEncrypt", description="Message security mode (ignored with policy `None`).")
    certificate: Path | None = Field(
        None, description=("Client certificate (DER or PEM). Default: a self-signed one generated on first run "
                           "in the data dir; its path and thumbprint are logged for the server admin to trust."))
    private_key: Path | None = Field(None, description="Private key of `certificate` (PEM or DER).")
    private_key_password: SecretStr | None = Field(None, description="Password of `private_key`, if it has one.")
    application_uri: str | None = Field(
        None, description="Application URI of the client (must match the certificate); default `urn:<host>:availability-collector`.")
    trusted_server_certificates: list[Path] = Field(
        default_factory=list,
        description=("Server certificates (files, or folders of .der/.pem) to trust, besides the data dir's "
                     "`pki/trusted/` folder. Unknown server certificates are refused and saved to `pki/rejected/`."))
    trust_any_server: bool = Field(
        False, description="Accept any server certificate (insecure: for commissioning only).")
    username: str | None = Field(None, description="User name for a username/password user token.")
    password: SecretStr | None = Field(None, description="Password for `username`; use `${ENV_VAR}`.")
    discover: Literal["machinery"] | None = Field(
        None, description="`machinery`: find the server's machines, no per-machine config: the Machinery `Machines` folder and every MachineToolType or WwMachineType object, each tracked with the richest state model it has (profiles `opc40001`, `machinetool`, `woodworking`; docs/PROFILES.md). A machine with none is reported as not trackable.")
    rescan_interval: Duration = Field(60.0, gt=0, description="How often discovery looks for machines added to the server.")

    @model_validator(mode="after")
    def _pairs(self) -> OpcUaSource:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("`certificate` and `private_key` go together: give both or neither")
        if self.password is not None and self.username is None:
            raise ValueError("`password` needs `username`")
        return self

    def stamps_at_source(self) -> bool:
        return self.timestamps == "source"

    def silence_detected_by(self) -> tuple[str, ...]:
        return ("opcua_session",)  # subscription keep-alives: a lost session takes its machines offline
