"""Configuration from the environment (pydantic-settings); every service extends this."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.access import ORDERSCTL, broker_user
from shared.retention import RetentionRule, messaging_rules
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
    #: Broker users allowed to send each command type (``*``: every type not named), for the
    #: services that obey commands (the processor, the notifier).
    command_senders: dict[str, list[str]] = Field(
        default_factory=lambda: {"*": [broker_user(ORDERSCTL), "guest"]}
    )
    #: Where ``ordersctl report --email`` sends the daily reconciliation.
    ops_report_email: str | None = None
    #: Seconds a publish waits for the broker's confirms before it fails (and is sent again).
    publish_confirm_timeout: float = Field(default=30.0, gt=0)
    #: Seconds between two rounds of the retention rules (shared/retention.py).
    prune_interval_seconds: float = Field(default=3600.0, gt=0)
    #: Days a dead letter may wait in its queue and still be replayed safely: the inbox keeps
    #: handled message ids longer, so that a replayed copy is still recognised.
    dead_letter_replay_days: float = Field(default=14.0, gt=0)
    inbox_retention_days: float = Field(default=30.0, gt=0)
    #: Days a published outbox row is kept (for a look at what was sent), then deleted.
    outbox_retention_days: float = Field(default=7.0, gt=0)
    #: Days after an order is settled (refused, canceled, refunded, closed) before the
    #: customer's personal data is removed from what is stored of it (Lengow: 6 months).
    personal_data_retention_days: float = Field(default=183.0, gt=0)
    #: Address of the health and metrics server (0.0.0.0 in a container).
    ops_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _inbox_outlives_replays(self) -> ServiceSettings:
        if self.inbox_retention_days <= self.dead_letter_replay_days:
            raise ValueError(
                "INBOX_RETENTION_DAYS must be longer than DEAD_LETTER_REPLAY_DAYS: a dead letter"
                " replayed after its id left the inbox would be handled twice"
            )
        return self

    def messaging_retention(self) -> list[RetentionRule]:
        return messaging_rules(
            inbox=timedelta(days=self.inbox_retention_days),
            outbox=timedelta(days=self.outbox_retention_days),
        )

    @property
    def redelivery_backoff(self) -> RedeliveryBackoff:
        return RedeliveryBackoff(self.retry_delay, max(self.retry_delay, self.retry_delay_max))
