"""The processor's settings (environment variables, see the README)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class ProcessorSettings(ServiceSettings):
    processor_db_schema: str = "processor"
    processor_ops_port: int = 9101
    processor_db_pool_size: int = 10
    #: Most order.changed deliveries committed in one transaction (and acknowledged at once).
    processor_batch_size: int = Field(default=500, gt=0, le=5000)
    #: Carrier and refund reason codes to check commands against until Lengow's marketplaces
    #: document has been read once (it then replaces them). None by default: a value that
    #: cannot be checked is refused rather than sent on trust.
    marketplace_carriers: list[str] = Field(default_factory=list)
    marketplace_refund_reasons: list[str] = Field(default_factory=list)
    #: ManoMano's delay to accept an order after it was placed.
    acceptance_delay_hours: float = Field(default=48.0, gt=0)
    #: How long before a deadline order.deadline_approaching is said (and the order counted
    #: at risk).
    deadline_lead_hours: float = Field(default=6.0, ge=0)
    deadline_check_seconds: float = Field(default=60.0, gt=0)
