"""``python -m sandbox``: serve the Lengow sandbox on a loopback port, with live orders."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from datetime import timedelta

from sandbox.marketplace import Marketplace, now
from sandbox.server import base_url, create_sandbox, sandbox_state, serve

#: Orders waiting for acceptance that only the reader's commands move (README, quick start).
DEMO_ORDERS = ("M0000000000001", "M0000000000002", "M0000000000003")


async def main(args: argparse.Namespace) -> None:
    marketplace = Marketplace(
        seed=args.seed,
        action_delay=timedelta(seconds=args.action_delay),
        # Each run's ids follow the last run's, as Lengow's do (the database outlives us).
        first_action_id=int(time.time() * 1000),
    )
    app = create_sandbox(marketplace=marketplace)
    start = now()
    for demo_id in DEMO_ORDERS:  # the README's quick start acts on these; life leaves them be
        marketplace.create_order(at=start - timedelta(minutes=args.orders + 1), order_id=demo_id)
        marketplace.left_alone.add(demo_id)
    for index in range(args.orders):
        marketplace.create_order(
            at=start - timedelta(minutes=args.orders - index),
            fulfillment=index % 7 == 3,
            missing_email=index % 11 == 5,
        )
    runner = await serve(app, args.host, args.port)
    print(f"Lengow sandbox on {base_url(runner)} ({args.orders} orders)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tick = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.tick)
        if stop.is_set():
            break
        tick += 1
        state = sandbox_state(app)
        # Life goes on: new orders come in and existing ones move along their lifecycle.
        for _ in range(args.new_orders):
            state.marketplace.create_order(
                at=now(),
                fulfillment=state.marketplace.random.random() < 0.15,
                missing_email=state.marketplace.random.random() < 0.05,
            )
        state.marketplace.advance(now(), args.advance_share)
    await runner.cleanup()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--orders", type=int, default=40, help="orders present at start")
    parser.add_argument("--tick", type=float, default=20.0, help="seconds between two moves")
    parser.add_argument("--new-orders", type=int, default=3, help="new orders at each tick")
    parser.add_argument("--advance-share", type=float, default=0.3)
    parser.add_argument(
        "--action-delay",
        type=float,
        default=2.0,
        help="seconds before the marketplace applies a seller action",
    )
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
