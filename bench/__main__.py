"""``python -m bench`` (``make bench``): every benchmark once, figures and ratios printed.

``BENCH_SCALE`` (default 1.0) scales the event counts, e.g. 0.1 for a quick look; the
catch-up always runs at 10,000 and 100,000 orders unless ``BENCH_CATCHUP`` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
from pathlib import Path

from bench import documents, feeds, pipeline, reference
from bench.harness import ALL_QUEUES, delete_queues, describe, fresh_database, servers


def line(label: str, value: str) -> None:
    print(f"{label:<58} {value}", flush=True)


async def main(amqp_url: str, postgres_url: str) -> None:
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    catchups = [int(n) for n in os.environ.get("BENCH_CATCHUP", "10000,100000").split(",")]
    print(
        f"lengow-orders benchmarks on {platform.node()}: {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; durable queues, confirms, fsync on\n"
    )

    print("1. Physical reference")
    publish = await reference.publish_confirm_rate(amqp_url, int(20000 * scale))
    consume = await reference.consume_ack_rate(amqp_url, int(20000 * scale))
    line("  aio-pika publish + confirm (persistent, quorum)", f"{publish:,.0f} msg/s")
    line("  aio-pika consume + ack", f"{consume:,.0f} msg/s")
    async with fresh_database(postgres_url) as database:
        single = await reference.transaction_rate(database, int(5000 * scale))
        batched = await reference.batched_rate(database, int(100000 * scale))
    line("  asyncpg one INSERT per transaction (10 connections)", f"{single:,.0f} tx/s")
    line("  asyncpg batched (COPY, 500 rows per transaction)", f"{batched:,.0f} rows/s")

    print("\n2. Processor: order.changed to committed state")
    for replicas in (1, 2):
        await delete_queues(amqp_url, *ALL_QUEUES)
        async with fresh_database(postgres_url) as database:
            result = await pipeline.processor_rate(amqp_url, database, int(20000 * scale), replicas)
        who = "one process" if replicas == 1 else f"{replicas} replicas"
        line(
            f"  {who}: committed, {result['events']:,} events",
            f"{result['rate']:,.0f} events/s",
        )
        line(
            f"  {who}: ratio to raw consume + ack (target >= 0.6)",
            f"{result['rate'] / consume:.2f}",
        )
        line(
            f"  {who}: with the emitted events published",
            f"{result['published_rate']:,.0f} events/s",
        )

    print("\n3. End to end")
    memory: dict[int, dict[str, float]] = {}
    for orders in catchups:
        await delete_queues(amqp_url, *ALL_QUEUES)
        async with fresh_database(postgres_url) as database:
            result = await pipeline.catchup(
                amqp_url, database, orders, again=orders == min(catchups)
            )
        memory[orders] = result["peak_rss_mib"]
        line(
            f"  3-day catch-up of {orders:,} orders, 100 a page",
            f"{result['seconds']:,.1f} s ({result['rate']:,.0f} orders/s)",
        )
        line(
            f"    {result['calls']:,} calls at {result['calls_per_minute']} a minute:"
            f" floor {result['floor_seconds']:,.1f} s (target ratio <= 1.1 where the budget binds)",
            f"ratio {result['ratio_to_floor']:.2f}, {result['rate_limited']} answered 429",
        )
        if result["again"] is not None:
            again = result["again"]
            line(
                f"    the daily catch-up again, nothing changed: {again['republished']:,.0f}"
                " orders published again (the repair of any loss downstream)",
                f"{again['seconds']:,.1f} s, ratio {again['seconds'] / result['seconds']:.2f}"
                " to the first read",
            )
    for rate in (500, 100):
        await delete_queues(amqp_url, *ALL_QUEUES)
        async with fresh_database(postgres_url) as database:
            result = await pipeline.latency(amqp_url, database, rate, max(5, int(20 * scale)))
        line(
            f"  publish -> commit at {rate} events/s (target p99 < 50 ms at 500)",
            describe(result["delays"]),
        )

    print("\n4. Notifier")
    for replicas in (1, 2):
        await delete_queues(amqp_url, *ALL_QUEUES)
        async with fresh_database(postgres_url) as database:
            result = await pipeline.notifier_rate(amqp_url, database, int(2000 * scale), replicas)
        who = "one process" if replicas == 1 else f"{replicas} replicas"
        line(
            f"  {who}: invoices rendered, archived, emailed ({result['invoices']:,})",
            f"{result['rate']:,.1f} invoices/s (target >= 200)",
        )
    line("  notifier peak memory", f"{result['peak_rss_mib']:.0f} MiB")
    costs = documents.document_costs(max(10, int(100 * scale)))
    line(
        "  one page, fpdf2's Helvetica (not embedded, not PDF/A)",
        f"{costs['helvetica_page']:.1f} ms",
    )
    line("  one page, PDF/A-3B, Source Sans Pro subset embedded", f"{costs['pdfa_page']:.1f} ms")
    line("  its EN 16931 XML (drafthorse, checked against the XSD)", f"{costs['xml']:.1f} ms")
    line(
        "  the whole Factur-X document (page, XML, embedding)",
        f"{costs['factur_x']:.1f} ms, ratio {costs['factur_x'] / costs['helvetica_page']:.1f}"
        " to the Helvetica page",
    )
    handled = await documents.handler_cost(max(10, int(100 * scale)))
    line(
        "  the notifier's own work on one invoice, nothing to wait for (in-memory store,"
        " a mail server that accepts at once)",
        f"{handled:.1f} ms: at most {1000 / handled:,.0f} invoices/s on one core; ratio"
        f" {handled / costs['factur_x']:.2f} to the Factur-X document alone",
    )

    print("\n5. Peak memory (VmHWM) during the catch-ups")
    for orders, peaks in memory.items():
        line(f"  {orders:,} orders", ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()))
    await delete_queues(amqp_url, *ALL_QUEUES)

    print("\n6. ordersctl feeds check (two CSV feeds of N products each)")
    with tempfile.TemporaryDirectory() as folder:
        for products in (20_000, 200_000):
            result = await feeds.feeds_check(Path(folder), products)
            check, bare = result["check"], result["reference"]
            line(
                f"  {products:,} + {products:,} products, {check['problems']} problems",
                f"{check['seconds']:.2f} s, ratio {check['seconds'] / bare['seconds']:.1f} to"
                f" csv.reader alone ({bare['seconds']:.2f} s); peak {check['peak_mib']:.0f} MiB",
            )


if __name__ == "__main__":
    with servers() as (amqp, postgres):
        asyncio.run(main(amqp, postgres))
