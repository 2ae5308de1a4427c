"""The notifier's read queries, for ordersctl and devstack: no one else reads its tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.database import Connection
from shared.queries import first, rows, table

Row = dict[str, Any]


class NotifierQueries:
    def __init__(self, conn: Connection, schema: str = "notifier") -> None:
        self._conn = conn
        self._invoices = table(schema, "invoices")
        self._holds = table(schema, "invoice_holds")
        self._refunds = table(schema, "refunds")

    async def document_counts(self) -> list[Row]:
        return await rows(
            self._conn,
            f"SELECT kind, email_status, count(*) AS n FROM {self._invoices}"
            " GROUP BY kind, email_status ORDER BY kind DESC, n DESC",
        )

    async def invoice(self, marketplace: str, order_id: str) -> Row | None:
        return await first(
            self._conn,
            "SELECT invoice_number, issued_on, email_status, recipient, sent_at, last_error"
            f" FROM {self._invoices} WHERE marketplace = $1 AND marketplace_order_id = $2"
            " AND kind = 'invoice'",
            marketplace,
            order_id,
        )

    async def credit_notes(self, marketplace: str, order_id: str) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT invoice_number AS credit_note, refers_to, issued_on, total_incl,"
            f" email_status, sent_at, last_error FROM {self._invoices}"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND kind = 'credit_note'"
            " ORDER BY sequence",
            marketplace,
            order_id,
        )

    async def refunds_held(self, marketplace: str, order_id: str) -> list[Row]:
        return await rows(
            self._conn,
            f"SELECT refund_key AS refund, reason, received_at FROM {self._refunds}"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND outcome = 'held'"
            " ORDER BY received_at",
            marketplace,
            order_id,
        )

    async def invoice_held(self, marketplace: str, order_id: str) -> Row | None:
        return await first(
            self._conn,
            f"SELECT reason, held_at, checked_at FROM {self._holds}"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND released_at IS NULL",
            marketplace,
            order_id,
        )

    async def failed_documents(self, since: datetime | None = None) -> list[Row]:
        """Invoices and credit notes whose email failed for good (or is in doubt)."""
        return await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, kind, invoice_number, email_status,"
            f" last_error, created_at FROM {self._invoices}"
            " WHERE email_status IN ('failed', 'in_doubt')"
            " AND ($1::timestamptz IS NULL OR created_at >= $1) ORDER BY created_at",
            since,
        )

    async def holds(self) -> list[Row]:
        """Invoices held and refunds held: documents not issued because they would be wrong."""
        invoices = await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, 'invoice' AS document, reason, held_at"
            f" FROM {self._holds} WHERE released_at IS NULL ORDER BY held_at",
        )
        refunds = await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, 'credit_note' AS document, reason,"
            f" received_at AS held_at FROM {self._refunds} WHERE outcome = 'held'"
            " ORDER BY received_at",
        )
        return invoices + refunds
