"""The messages services exchange: one envelope, typed payloads.

Every message on the bus is an :class:`Envelope` whose ``type`` is also its routing key.
Payload models keep unknown fields (``extra="allow"``) so a newer producer never loses data
on its way through an older consumer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class LengowStatus(StrEnum):
    """Lengow's normalised order statuses, across every marketplace."""

    NEW = "new"
    WAITING_ACCEPTANCE = "waiting_acceptance"
    REFUSED = "refused"
    ACCEPTED = "accepted"
    WAITING_SHIPMENT = "waiting_shipment"
    SHIPPED = "shipped"
    CLOSED = "closed"
    CANCELED = "canceled"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    PARTIAL_REFUNDED = "partial_refunded"
    TO_REFUND = "to_refund"


#: ManoMano's own name for each Lengow status it uses (None: ManoMano shows no such step).
MANOMANO_STATUS: dict[LengowStatus, str | None] = {
    LengowStatus.WAITING_ACCEPTANCE: "PENDING",
    LengowStatus.ACCEPTED: None,
    LengowStatus.WAITING_SHIPMENT: "PREPARATION",
    LengowStatus.SHIPPED: "SHIPPED",
    LengowStatus.REFUNDING: "REFUNDING",
    LengowStatus.REFUSED: "REFUSED",
    LengowStatus.REFUNDED: "REFUNDED",
    LengowStatus.CANCELED: None,
}


#: Nothing more is expected of the seller (the processor's lifecycle derives the same set from
#: its moves, and a test holds them equal): the poller stops re-reading these orders.
SETTLED_LENGOW_STATUSES = frozenset(
    {LengowStatus.REFUSED, LengowStatus.CANCELED, LengowStatus.REFUNDED, LengowStatus.CLOSED}
)


class EventType(StrEnum):
    ORDER_CHANGED = "order.changed"
    ORDER_STATUS_CHANGED = "order.status_changed"
    ORDER_SHIPPED = "order.shipped"
    ORDER_REFUNDED = "order.refunded"
    ORDER_TRANSITION_REJECTED = "order.transition_rejected"
    COMMAND_ACCEPTED = "command.accepted"
    COMMAND_REJECTED = "command.rejected"
    ORDER_ACTION_REQUESTED = "order.action_requested"
    ORDER_ACTION_SUCCEEDED = "order.action_succeeded"
    ORDER_ACTION_FAILED = "order.action_failed"
    INVOICE_SENT = "invoice.sent"
    INVOICE_FAILED = "invoice.failed"
    INVOICE_HELD = "invoice.held"
    CREDIT_NOTE_SENT = "credit_note.sent"
    CREDIT_NOTE_FAILED = "credit_note.failed"
    MARKETPLACE_RULES_CHANGED = "marketplace.rules_changed"
    ORDER_LINK_REQUESTED = "order.link_requested"
    ORDER_DEADLINE_APPROACHING = "order.deadline_approaching"
    ORDER_DEADLINE_MISSED = "order.deadline_missed"


class CommandType(StrEnum):
    ACCEPT = "order.accept"
    REFUSE = "order.refuse"
    SHIP = "order.ship"
    REFUND = "order.refund"
    LINK = "order.link"
    SYNC = "poller.sync"
    INVOICE_RELEASE = "invoice.release"
    INVOICE_SEND = "invoice.send"
    INVOICE_RESEND = "invoice.resend"


class Payload(BaseModel):
    """Base of every payload: unknown fields are kept, never silently dropped."""

    model_config = ConfigDict(extra="allow", frozen=True)


#: Not blank: an order is never named by spaces alone.
_NOT_BLANK = r"\S"


class OrderRef(Payload):
    marketplace: str = Field(min_length=1, max_length=100, pattern=_NOT_BLANK)
    marketplace_order_id: str = Field(min_length=1, max_length=200, pattern=_NOT_BLANK)


# --- The Lengow order, as the poller observed it -------------------------------------------
# Lengow writes "no value" as blank text; the poller turns it into null where it reads
# Lengow's JSON (services/poller/orders.py), so these models see only real values.


class Address(Payload):
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    company: str | None = None
    first_line: str | None = None
    second_line: str | None = None
    complement: str | None = None
    zipcode: str | None = None
    city: str | None = None
    common_country_iso_a2: str | None = None
    phone_home: str | None = None
    phone_mobile: str | None = None
    phone_office: str | None = None
    vat_number: str | None = None


class Tracking(Payload):
    carrier: str | None = None
    method: str | None = None
    number: str | None = None
    url: str | None = None
    is_delivered_by_marketplace: bool | None = None


class CartLine(Payload):
    marketplace_order_line_id: str | None = None
    marketplace_product_id: str | None = None
    merchant_product_id: dict[str, Any] | None = None
    title: str | None = None
    quantity: int = 1
    amount: Decimal | None = None
    price_unit: Decimal | None = None
    shipping: Decimal | None = None
    tax: Decimal | None = None
    discount: Decimal | None = None
    refunded_amount: Decimal | None = None
    marketplace_status: str | None = None


class Delivery(Address):
    trackings: list[Tracking] = Field(default_factory=list)


class Package(Payload):
    delivery: Delivery | None = None
    cart: list[CartLine] = Field(default_factory=list)


class OrderSnapshot(OrderRef):
    """``order.changed``: the full order as Lengow returned it, plus what the poller derived."""

    lengow_status: LengowStatus
    marketplace_status: str | None = None
    updated_at: datetime
    marketplace_order_date: datetime | None = None
    marketplace_last_modified_date: datetime | None = None
    total_order: Decimal | None = None
    total_tax: Decimal | None = None
    shipping: Decimal | None = None
    discount: Decimal | None = None
    processing_fee: Decimal | None = None
    commission: Decimal | None = None
    currency: str | None = None
    is_delivered_by_marketplace: bool = False
    billing_address: Address | None = None
    packages: list[Package] = Field(default_factory=list)
    #: The poller's source the order was read from (LENGOW_SOURCES' name, e.g. "ManoMano
    #: Fulfillment"); None in snapshots published before sources were named.
    lengow_source: str | None = None

    def lines(self) -> list[CartLine]:
        return [line for package in self.packages for line in package.cart]

    def trackings(self) -> list[Tracking]:
        return [
            tracking
            for package in self.packages
            if package.delivery is not None
            for tracking in package.delivery.trackings
        ]


# --- Processor events ----------------------------------------------------------------------

TransitionKind = Literal["initial", "normal", "skipped"]
TransitionCause = Literal["observed", "command"]


class OrderStatusChanged(OrderRef):
    from_status: LengowStatus | None
    to_status: LengowStatus
    manomano_status: str | None
    kind: TransitionKind
    cause: TransitionCause
    observed_at: datetime
    command_id: str | None = None


class OrderShipped(OrderRef):
    """Everything the invoice needs, so the notifier never asks another service."""

    merchant_order_id: list[str] | None = None
    marketplace_order_date: datetime | None = None
    shipped_at: datetime
    currency: str | None
    billing_address: Address | None
    lines: list[CartLine]
    total_order: Decimal | None
    total_tax: Decimal | None
    shipping: Decimal | None
    #: What the customer did not pay (vouchers); older events lack it and the next fields.
    discount: Decimal | None = None
    #: A fee the customer paid on top (Lengow's ``processing_fee``).
    processing_fee: Decimal | None = None
    #: Where the goods went (the first parcel's address): it decides the VAT.
    delivery_address: Address | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    is_delivered_by_marketplace: bool


class OrderRefunded(OrderShipped):
    """``order.refunded``: an order announced as shipped reached a refund status. The order's
    data as it stands (lines with Lengow's cumulative ``refunded_amount``); the status says
    whether the refund is whole (``refunded``) or partial (``partial_refunded``)."""

    refund_status: LengowStatus
    refunded_at: datetime


class OrderTransitionRejected(OrderRef):
    current_status: LengowStatus
    observed_status: LengowStatus
    observed_at: datetime
    reason: str


class Deadline(StrEnum):
    #: ManoMano's acceptance delay after the order date (a setting, 48 hours by default).
    ACCEPTANCE = "acceptance"
    #: Lengow's max_shipping_date of the order's lines (the earliest), else the order's
    #: shipping_deadline.
    SHIPMENT = "shipment"


class OrderDeadline(OrderRef):
    """An order that still waits on the seller near (``order.deadline_approaching``) or past
    (``order.deadline_missed``) one of its deadlines: said once per order, deadline and phase."""

    deadline: Deadline
    due_at: datetime
    status: LengowStatus


# --- Commands and their answers ------------------------------------------------------------


class OrderCommand(OrderRef):
    """A request from another service; ``command_id`` is the caller's idempotency key.

    Unlike events, commands refuse unknown fields: a misspelt argument must not be ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: str = Field(min_length=1, max_length=200)


class AcceptOrder(OrderCommand):
    pass


class RefuseOrder(OrderCommand):
    pass


class ShipOrder(OrderCommand):
    carrier: str = Field(min_length=1, max_length=100)
    carrier_name: str | None = Field(default=None, max_length=200)
    tracking_number: str | None = Field(default=None, max_length=200)
    tracking_url: str | None = Field(default=None, max_length=2000)
    line_ids: list[str] | None = None


class RefundOrder(OrderCommand):
    # Optional here so that a missing one gets the lifecycle's clear reason, not a schema error.
    refund_reason: str | None = Field(default=None, max_length=200)
    refund_shipping_fees: bool | None = None


class LinkOrder(OrderCommand):
    """``order.link``: the id another system (the shop, the ERP) gives the order, written back
    to Lengow as its merchant order id (the order then shows as imported)."""

    merchant_order_id: str = Field(min_length=1, max_length=100, pattern=_NOT_BLANK)


class ReleaseInvoice(OrderCommand):
    """``invoice.release``: issue a held invoice once its data or the settings allow it."""


class SendInvoice(OrderCommand):
    """``invoice.send``: email an invoice kept on request (``INVOICE_MODE=on_request``)."""


class ResendInvoice(OrderCommand):
    """``invoice.resend``: email the archived invoice again, same number, same PDF."""


COMMAND_MODELS: dict[str, type[OrderCommand]] = {
    CommandType.ACCEPT: AcceptOrder,
    CommandType.REFUSE: RefuseOrder,
    CommandType.SHIP: ShipOrder,
    CommandType.REFUND: RefundOrder,
    CommandType.LINK: LinkOrder,
    CommandType.INVOICE_RELEASE: ReleaseInvoice,
    CommandType.INVOICE_SEND: SendInvoice,
    CommandType.INVOICE_RESEND: ResendInvoice,
}


class SyncOrders(Payload):
    """``poller.sync``: poll now, outside the schedule (ops)."""

    #: A source's name; every source when None.
    source: str | None = None
    #: The 3-day catch-up window instead of the incremental one.
    catchup: bool = False
    #: An explicit window; it does not move the watermark.
    updated_from: datetime | None = None
    updated_to: datetime | None = None


class CommandAccepted(OrderRef):
    command_id: str
    command_type: CommandType
    #: True when the same command_id was seen before: this repeats the first answer.
    duplicate: bool = False


class InvoiceCommandAccepted(CommandAccepted):
    """The notifier did what was asked: the invoice's number and its email's status."""

    invoice_number: str
    email_status: str


class CommandRejected(Payload):
    command_id: str | None
    command_type: str | None
    marketplace: str | None = None
    marketplace_order_id: str | None = None
    reason: str
    duplicate: bool = False


class OrderActionRequested(OrderRef):
    command_id: str
    action_type: Literal["accept", "refuse", "ship", "refund"]
    arguments: dict[str, Any] = Field(default_factory=dict)


class OrderActionSucceeded(OrderRef):
    command_id: str
    action_type: str
    action_id: str


class OrderActionFailed(OrderRef):
    command_id: str
    action_type: str
    action_id: str | None = None
    errors: list[str]


class OrderLinkRequested(OrderRef):
    command_id: str
    merchant_order_id: str


class MarketplaceRulesChanged(Payload):
    """``marketplace.rules_changed``: one marketplace's entry of Lengow's
    ``GET /v3.0/marketplaces`` document, as the poller read it (codes, labels, actions)."""

    marketplace: str = Field(min_length=1, max_length=100)
    source: str
    fetched_at: datetime
    rules: dict[str, Any]


class InvoiceSent(OrderRef):
    invoice_number: str
    message_id: str
    recipient: str


class InvoiceFailed(OrderRef):
    invoice_number: str | None = None
    reason: str


class CreditNoteSent(OrderRef):
    credit_note_number: str
    invoice_number: str
    message_id: str
    recipient: str
    total_incl: Decimal


class CreditNoteFailed(OrderRef):
    credit_note_number: str
    invoice_number: str
    reason: str


class InvoiceHeld(OrderRef):
    """No invoice was issued: it would not be right with the data and settings at hand."""

    reason: str


# --- The envelope --------------------------------------------------------------------------

DataT = TypeVar("DataT")


class Envelope(BaseModel, Generic[DataT]):
    """CloudEvents-like envelope; ``type`` doubles as the AMQP routing key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, max_length=100)
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str | None = Field(default=None, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)
    data: DataT


#: Looked up once: parametrising a generic model costs a cache lookup at every use.
_ANY_ENVELOPE = Envelope[Any]


def follow_up(cause: Envelope[Any], *, type: str, source: str, data: BaseModel) -> Envelope[Any]:
    """An envelope caused by ``cause``: it inherits the correlation and names its cause."""
    cause_id = str(cause.id)
    return _ANY_ENVELOPE(
        type=type,
        source=source,
        correlation_id=cause.correlation_id or cause_id,
        causation_id=cause_id,
        data=data,
    )


#: The payload of each event, for consumers and for the AsyncAPI document.
EVENT_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.ORDER_CHANGED: OrderSnapshot,
    EventType.ORDER_STATUS_CHANGED: OrderStatusChanged,
    EventType.ORDER_SHIPPED: OrderShipped,
    EventType.ORDER_REFUNDED: OrderRefunded,
    EventType.ORDER_TRANSITION_REJECTED: OrderTransitionRejected,
    EventType.COMMAND_ACCEPTED: CommandAccepted,
    EventType.COMMAND_REJECTED: CommandRejected,
    EventType.ORDER_ACTION_REQUESTED: OrderActionRequested,
    EventType.ORDER_ACTION_SUCCEEDED: OrderActionSucceeded,
    EventType.ORDER_ACTION_FAILED: OrderActionFailed,
    EventType.INVOICE_SENT: InvoiceSent,
    EventType.INVOICE_FAILED: InvoiceFailed,
    EventType.INVOICE_HELD: InvoiceHeld,
    EventType.CREDIT_NOTE_SENT: CreditNoteSent,
    EventType.CREDIT_NOTE_FAILED: CreditNoteFailed,
    EventType.MARKETPLACE_RULES_CHANGED: MarketplaceRulesChanged,
    EventType.ORDER_LINK_REQUESTED: OrderLinkRequested,
    EventType.ORDER_DEADLINE_APPROACHING: OrderDeadline,
    EventType.ORDER_DEADLINE_MISSED: OrderDeadline,
}
