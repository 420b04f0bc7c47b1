"""The one base of every config model: unknown keys are errors (with a did-you-mean from the
loader), never silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
