"""One suite for the notifier's stores, run against PostgreSQL (``repository.py``,
tests/integration/test_notifier_store.py) and memory (``memory.py``,
tests/unit/test_notifier_store.py): the handlers' unit tests on memory prove something only
while both pass it.

A subclass gives the fixture ``store``: a :class:`NotifierStore` over a fresh, empty store.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.notifier.invoice import DocumentKind, Invoice, build_invoice
from services.notifier.repository import (
    DocumentExistsError,
    DocumentKey,
    NewDocument,
    NotifierStore,
)
from shared.contracts import Envelope, OrderRef, OrderRefunded, OrderShipped
from tests.factories import SELLER, order_refunded, order_shipped

LEASE = timedelta(minutes=5)
#: A lease already over: the claim it gives has expired.
RUN_OUT = timedelta(seconds=-1)


def ref(order_id: str) -> OrderRef:
    return OrderRef(marketplace="manomano_fr", marketplace_order_id=order_id)


def document(order_id: str, number: str) -> Invoice:
    shipment = OrderShipped.model_validate(order_shipped(order_id))
    return build_invoice(shipment, seller=SELLER, number=number, issued_on=date(2026, 11, 24))


async def add(
    store: NotifierStore,
    key: DocumentKey,
    number: str,
    *,
    worker: str = "w-1",
    lease: timedelta = LEASE,
) -> None:
    async with store.work() as work:
        await work.invoices.add(
            NewDocument(
                key,
                document(key.marketplace_order_id, number),
                seller=SELLER.siren,
                sequence=int(number[-6:]),
                message_id=f"<{number}@example.fr>",
                claimed_by=worker,
                lease=lease,
                source={"order": key.marketplace_order_id},
            )
        )


def event() -> Envelope[Any]:
    return Envelope[Any](id=uuid.uuid4(), type="invoice.sent", source="test", data={})


class NotifierStoreContract:
    async def test_sequences_count_per_seller_series_and_year(self, store: NotifierStore) -> None:
        async with store.work() as work:
            invoices = work.invoices
            assert await invoices.next_sequence("1", DocumentKind.INVOICE, 2026) == 1
            assert await invoices.next_sequence("1", DocumentKind.INVOICE, 2026) == 2
            assert await invoices.next_sequence("1", DocumentKind.CREDIT_NOTE, 2026) == 1
            assert await invoices.next_sequence("1", DocumentKind.INVOICE, 2027) == 1
            assert await invoices.next_sequence("2", DocumentKind.INVOICE, 2026) == 1

    async def test_an_added_document_reads_back_pending_and_claimed(
        self, store: NotifierStore
    ) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        async with store.session() as session:
            stored = await session.invoices.get(key)
            assert stored is not None
            assert (stored.number, stored.email_status, stored.attempts) == (
                "FA2026-000001",
                "pending",
                0,
            )
            assert stored.message_id == "<FA2026-000001@example.fr>"
            assert stored.lines == document("A", "FA2026-000001").lines
            assert await session.invoices.source(key) == {"order": "A"}
            assert await session.invoices.get(DocumentKey.invoice_of(ref("B"))) is None
            # Its numbering worker holds it: nobody else can claim it.
            assert await session.invoices.claim(key, "w-2", LEASE) is None

    async def test_a_document_is_numbered_once(self, store: NotifierStore) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        with pytest.raises(DocumentExistsError):
            await add(store, key, "FA2026-000002")
        async with store.session() as session:
            stored = await session.invoices.get(key)
            assert stored is not None and stored.number == "FA2026-000001"

    async def test_a_claim_waits_for_the_lease_or_the_release(self, store: NotifierStore) -> None:
        held, expired = DocumentKey.invoice_of(ref("A")), DocumentKey.invoice_of(ref("B"))
        await add(store, held, "FA2026-000001")
        await add(store, expired, "FA2026-000002", lease=RUN_OUT)
        async with store.session() as session:
            invoices = session.invoices
            await invoices.release(held, "not its worker")
            assert await invoices.claim(held, "w-2", LEASE) is None
            await invoices.release(held, "w-1")
            claimed = await invoices.claim(held, "w-2", LEASE)
            assert claimed is not None and claimed.number == "FA2026-000001"
            assert await invoices.claim(expired, "w-3", LEASE) is not None

    async def test_a_settled_email_is_not_claimed(self, store: NotifierStore) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        async with store.session() as session:
            await session.invoices.set_status(key, "sent")
            assert await session.invoices.claim(key, "w-2", LEASE) is None

    async def test_an_attempt_counts_archives_once_and_keeps_the_claim(
        self, store: NotifierStore
    ) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        async with store.session() as session:
            invoices = session.invoices
            await invoices.set_status(key, "sending", pdf=b"first", doubtful=1)
            stored = await invoices.get(key)
            assert stored is not None
            assert (stored.email_status, stored.attempts, stored.doubtful) == ("sending", 1, 1)
            assert await invoices.claim(key, "w-2", LEASE) is None  # still w-1's
            await invoices.set_status(key, "pending", "refused", pdf=b"second")
            assert await invoices.pdf(key) == b"first"
            stored = await invoices.get(key)
            assert stored is not None and (stored.attempts, stored.doubtful) == (1, 1)
            assert await invoices.claim(key, "w-2", LEASE) is not None  # the claim ended

    async def test_a_doubt_keeps_when_its_resend_is_due(self, store: NotifierStore) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        moment = datetime(2026, 11, 24, 12, tzinfo=UTC)
        async with store.session() as session:
            await session.invoices.set_status(key, "in_doubt", "no answer", resend_after=moment)
            stored = await session.invoices.get(key)
            assert stored is not None
            assert (stored.email_status, stored.resend_after) == ("in_doubt", moment)

    async def test_an_archived_document_is_emailed_on_request_only(
        self, store: NotifierStore
    ) -> None:
        key = DocumentKey.invoice_of(ref("A"))
        await add(store, key, "FA2026-000001")
        async with store.session() as session:
            invoices = session.invoices
            assert not await invoices.request_email(key)  # pending, not archived
            await invoices.set_status(key, "archived", pdf=b"%PDF")
            assert await invoices.request_email(key)
            stored = await invoices.get(key)
            assert stored is not None and stored.email_status == "pending"
            await invoices.record_resend(key)

    async def test_credit_notes_of_an_order_come_in_numbering_order(
        self, store: NotifierStore
    ) -> None:
        order = ref("A")
        await add(store, DocumentKey.invoice_of(order), "FA2026-000001")
        await add(store, DocumentKey.credit_note_of(order, "r-2"), "AV2026-000002")
        await add(store, DocumentKey.credit_note_of(order, "r-1"), "AV2026-000001")
        await add(store, DocumentKey.credit_note_of(ref("B"), "r-1"), "AV2026-000003")
        refund = OrderRefunded.model_validate(order_refunded("refunded", 1))
        await add(store, DocumentKey.credit_note_of(refund, "r-3"), "AV2026-000004")
        async with store.session() as session:
            notes = await session.invoices.credit_notes_of(order)
            # The handlers ask with the refund itself: its order is what counts.
            of_refund = await session.invoices.credit_notes_of(refund)
        assert [note.number for note in notes] == ["AV2026-000001", "AV2026-000002"]
        assert [note.number for note in of_refund] == ["AV2026-000004"]

    async def test_refunds_wait_until_settled_and_a_held_one_keeps_waiting(
        self, store: NotifierStore
    ) -> None:
        order = ref("A")
        async with store.work() as work:
            await work.refunds.add(order, "r-1", {"refund": 1})
            await work.refunds.add(order, "r-1", {"refund": "again"})
            await work.refunds.add(order, "r-2", {"refund": 2})
            await work.refunds.add(ref("B"), "r-1", {"refund": 3})
        async with store.session() as session:
            refunds = session.refunds
            assert [w.refund for w in await refunds.waiting(order)] == [
                {"refund": 1},
                {"refund": 2},
            ]
            await refunds.settle(order, "r-1", "held", "figures unknown")
            await refunds.settle(order, "r-2", "credited")
            assert [w.refund_key for w in await refunds.waiting(order)] == ["r-1"]
            assert len(await refunds.waiting()) == 2

    async def test_a_hold_is_news_once_per_reason(self, store: NotifierStore) -> None:
        order = ref("A")
        async with store.work() as work:
            assert await work.holds.hold(order, "no VAT rate", {"shipment": 1})
            assert not await work.holds.hold(order, "no VAT rate", {"shipment": 2})
            assert await work.holds.hold(order, "total unknown", {"shipment": 3})
        async with store.session() as session:
            hold = await session.holds.get(order)
            assert hold is not None and (hold.reason, hold.shipment) == (
                "total unknown",
                {"shipment": 3},
            )
            assert await session.holds.count() == 1
            assert [h.reason for h in await session.holds.held()] == ["total unknown"]
            await session.holds.release(order)
            assert await session.holds.get(order) is None
            assert await session.holds.held() == []
            assert await session.holds.hold(order, "total unknown", {"shipment": 4})

    async def test_a_command_starts_once_and_is_forgotten_only_while_running(
        self, store: NotifierStore
    ) -> None:
        order = ref("A")
        async with store.work() as work:
            assert await work.commands.start("c-1", "invoice.send", order, "digest")
            assert not await work.commands.start("c-1", "invoice.send", order, "digest")
            running = await work.commands.get("c-1")
            assert running is not None and (running.outcome, running.answer) == ("running", None)
            await work.commands.forget("c-1")
            assert await work.commands.get("c-1") is None
            assert await work.commands.start("c-2", "invoice.send", order, "digest")
            await work.commands.finish("c-2", "accepted", None, {"invoice": "FA"})
            await work.commands.forget("c-2")
            done = await work.commands.get("c-2")
            assert done is not None and (done.outcome, done.answer) == (
                "accepted",
                {"invoice": "FA"},
            )

    async def test_what_a_failed_unit_wrote_is_undone(self, store: NotifierStore) -> None:
        order = ref("A")

        async def failing() -> None:
            async with store.work() as work:
                await work.invoices.next_sequence(SELLER.siren, DocumentKind.INVOICE, 2026)
                await work.holds.hold(order, "no VAT rate", {})
                await work.refunds.add(order, "r-1", {})
                await work.outbox.add("orders.events", event())
                raise RuntimeError("the handler failed")

        with pytest.raises(RuntimeError):
            await failing()
        async with store.work() as work:
            assert await work.invoices.next_sequence(SELLER.siren, DocumentKind.INVOICE, 2026) == 1
            assert await work.holds.get(order) is None
            assert await work.refunds.waiting() == []

    async def test_the_outbox_counts_what_it_was_given(self, store: NotifierStore) -> None:
        async with store.work() as work:
            await work.outbox.add("orders.events", event())
            await work.outbox.add_many("orders.events", [event(), event()])
            assert work.outbox.added == 3
