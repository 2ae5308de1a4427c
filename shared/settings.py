"""Configuration from the environment (pydantic-settings); every service extends this."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settlement import RedeliveryBackoff


class ServiceSettings(BaseSettings):
    """What every service needs. Defaults are the local development stack of ``make run``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/lengow_orders")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    #: Seconds between two outbox sweeps when no commit woke the relay up.
    outbox_poll_interval: float = Field(default=0.5, gt=0)
    outbox_batch_size: int = Field(default=1000, gt=0, le=10_000)
    #: Seconds to wait before handing back a message whose handling failed (database down...)
    #: the first time; the pause doubles with each redelivery up to ``retry_delay_max``.
    retry_delay: float = Field(default=1.0, ge=0)
    retry_delay_max: float = Field(default=300.0, ge=0)
    prefetch_count: int = Field(default=64, gt=0)
    #: Address of the health and metrics server (0.0.0.0 in a container).
    ops_host: str = "127.0.0.1"

    @property
    def redelivery_backoff(self) -> RedeliveryBackoff:
        return RedeliveryBackoff(self.retry_delay, max(self.retry_delay, self.retry_delay_max))
