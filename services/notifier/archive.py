"""``python -m services.notifier.archive ORDER_ID [--marketplace M] [-o FILE]``: write an
archived invoice PDF back out, for ops and customer service."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.notifier.repository import DocumentKey, InvoiceRepository
from services.notifier.settings import NotifierSettings
from shared.contracts import OrderRef
from shared.database import create_pool


async def fetch_invoice(settings: NotifierSettings, ref: OrderRef) -> bytes | None:
    pool = await create_pool(
        settings.database_url.get_secret_value(), settings.notifier_db_schema, max_size=1
    )
    try:
        async with pool.acquire() as conn:
            return await InvoiceRepository(conn).pdf(DocumentKey.invoice_of(ref))
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("order_id")
    parser.add_argument("--marketplace", default="manomano_fr")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: <order>.pdf)")
    args = parser.parse_args()
    ref = OrderRef(marketplace=args.marketplace, marketplace_order_id=args.order_id)
    pdf = asyncio.run(fetch_invoice(NotifierSettings(), ref))
    if pdf is None:
        print(f"no invoice archived for {args.marketplace} order {args.order_id}", file=sys.stderr)
        return 1
    output = args.output or Path(f"{args.order_id}.pdf")
    output.write_bytes(pdf)
    print(f"wrote {output} ({len(pdf)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
