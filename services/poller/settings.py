"""The poller's configuration, from the environment."""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, Field, SecretStr, model_validator

from shared.settings import ServiceSettings


class LengowSource(BaseModel):
    """One Lengow account and marketplace to read orders from (e.g. "ManoMano Standard")."""

    name: str = Field(min_length=1, max_length=100)
    account_id: int
    marketplace: str = "manomano_fr"
    access_token: SecretStr
    secret: SecretStr
    #: Fulfillment orders (shipped by ManoMano) are imported unless this says otherwise.
    import_fulfillment: bool = True


class PollerSettings(ServiceSettings):
    @model_validator(mode="after")
    def _sends_leave_connections_to_polls(self) -> PollerSettings:
        if self.action_concurrency >= self.poller_db_pool_size:
            raise ValueError("ACTION_CONCURRENCY must be below POLLER_DB_POOL_SIZE")
        return self

    lengow_api_url: str = "https://api.lengow.io"
    #: JSON list of sources: [{"name", "account_id", "marketplace", "access_token", "secret"}].
    lengow_sources: list[LengowSource] = Field(default_factory=list)
    #: Lengow's largest page is 100.
    lengow_page_size: int = Field(default=100, gt=0, le=100)
    #: Calls per route and window this process allows itself (Lengow's limit is about 500 a
    #: minute per route; polls, catch-ups, action checks and moi all spend from it).
    lengow_calls_per_minute: int = Field(default=450, gt=0, le=500)
    #: The budget's window (60 s at Lengow; shorter only in tests).
    lengow_budget_window_seconds: float = Field(default=60.0, gt=0)
    lengow_timeout_seconds: float = Field(default=30.0, gt=0)
    lengow_max_attempts: int = Field(default=5, gt=0)
    lengow_backoff_seconds: float = Field(default=1.0, ge=0)
    poll_interval_seconds: float = Field(default=900.0, gt=0)
    poll_overlap_seconds: float = Field(default=120.0, ge=0)
    #: UTC time of day after which the daily catch-up runs.
    catchup_time: time = time(3, 0)
    catchup_days: int = Field(default=3, gt=0)
    poller_db_schema: str = "poller"
    poll_runs_retention_days: float = Field(default=90.0, gt=0)
    poller_ops_port: int = 9102
    poller_db_pool_size: int = Field(default=10, ge=3)
    #: Actions sent at once; fewer than the pool's connections, so polls always find one.
    action_concurrency: int = Field(default=4, gt=0)
    #: Orders published at once while a page is handled (each waits for its confirm).
    publish_concurrency: int = Field(default=100, gt=0)
    #: Seconds between two checks of the actions Lengow has not processed yet.
    action_check_interval_seconds: float = Field(default=60.0, gt=0)
    #: An action the marketplace has not processed after this long is reported failed
    #: ("too old": Lengow's plugins wait 3 days).
    action_timeout_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)
    #: POSTs of one Lengow action that may go unanswered before giving up.
    action_max_attempts: int = Field(default=5, gt=0)
    #: Seconds between two reads of Lengow's marketplaces document (the plugins cache it 12 h).
    marketplace_refresh_seconds: float = Field(default=12 * 3600.0, gt=0)
    #: Seconds between two attempts to mark an order imported, and how many before giving up.
    import_retry_seconds: float = Field(default=60.0, ge=0)
    import_max_attempts: int = Field(default=20, gt=0)
