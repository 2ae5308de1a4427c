"""The poller's configuration, from the environment."""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, Field, SecretStr

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
    lengow_api_url: str = "https://api.lengow.io"
    #: JSON list of sources: [{"name", "account_id", "marketplace", "access_token", "secret"}].
    lengow_sources: list[LengowSource] = Field(default_factory=list)
    lengow_page_size: int = Field(default=100, gt=0, le=1000)
    lengow_timeout_seconds: float = Field(default=30.0, gt=0)
    lengow_max_attempts: int = Field(default=5, gt=0)
    lengow_backoff_seconds: float = Field(default=1.0, ge=0)
    poll_interval_seconds: float = Field(default=900.0, gt=0)
    poll_overlap_seconds: float = Field(default=120.0, ge=0)
    #: UTC time of day after which the daily catch-up runs.
    catchup_time: time = time(3, 0)
    catchup_days: int = Field(default=3, gt=0)
    poller_db_schema: str = "poller"
    poller_ops_port: int = 9102
    poller_db_pool_size: int = 5
    #: Orders published at once while a page is handled (each waits for its confirm).
    publish_concurrency: int = Field(default=100, gt=0)
    #: Seconds between two checks of the actions Lengow has not processed yet.
    action_check_interval_seconds: float = Field(default=60.0, gt=0)
    #: An action the marketplace has not processed after this long is reported failed.
    action_timeout_seconds: float = Field(default=24 * 3600.0, gt=0)
    #: Deliveries of one action request that may fail on Lengow's side before giving up.
    action_max_attempts: int = Field(default=5, gt=0)
