"""UiSettings: how the UI process authenticates users and where Try-it transcribes.

Every field is a VOXTUNE_UI_* environment variable (the chart sets them from values/Secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXTUNE_UI_", extra="ignore")

    auth: Literal["none", "password", "proxy"] = Field(
        "none", description="none: one local user; password: the users file; proxy: trust "
        "the user name an authenticating reverse proxy puts in `proxy_header`.")
    users_file: Path | None = Field(None, description="`user:password` lines (mount it from "
                                    "a Secret); needed for auth=password.")
    proxy_header: str = Field("X-Forwarded-User", description="Header with the user name "
                              "when auth=proxy; only safe when the proxy is the only way in.")
    allow_remote_without_auth: bool = Field(
        False, description="Serve on a non-loopback address without auth; only behind "
        "something else that authenticates.")
    demo_url: str | None = Field(None, description="A running `voxtune serve` (the chart's "
                                 "demo Deployment) for Try-it; unset: the UI starts one locally.")
    shared_data: Path | None = Field(
        None, description="A folder of datasets every UI user may train on. A local folder "
        "named in the Dataset tab must lie inside it or inside the user's own workspace; "
        "unset: only the user's workspace (and Hub ids).")
    job_settings: Path | None = Field(
        None, description="The controller's job settings file (the chart mounts its ConfigMap): "
        "on Kubernetes the Train page plans against its GPU profiles, as the controller will; "
        "unset: the plan's default profiles.")
    max_upload_mb: int = Field(50, ge=1, le=2048, description="Largest audio file accepted.")
    max_clips: int = Field(2000, ge=1, description="Clips per user workspace.")
