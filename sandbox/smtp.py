"""A local SMTP sink (aiosmtpd): every message accepted is written as an ``.eml`` file.

``python -m sandbox.smtp --port 8025 --folder var/emails``. Recipients at the domain
``refused.example.fr`` are refused with a permanent 550, so tests and demos can see a bounce.
Not a production service: ops point the notifier at Mailpit or a real relay instead.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

REFUSED_DOMAIN = "refused.example.fr"


class MailFolder:
    """aiosmtpd handler that files each message under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        #: The client address of each SMTP session that delivered something.
        self.sessions: set[tuple[str, int]] = set()
        #: Faults for the next messages, one each: "drop" files the message and closes the
        #: connection without answering; a number files it and answers that many seconds later.
        self.after_data: list[str | float] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower().endswith("@" + REFUSED_DOMAIN):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.sessions.add(tuple(session.peer[:2]))
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.folder / f".{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self.folder / name)  # readers never see half a message
        fault = self.after_data.pop(0) if self.after_data else None
        if fault == "drop":
            server.transport.close()
        elif isinstance(fault, int | float):
            await asyncio.sleep(fault)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [
            message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted(self.folder.glob("*.eml"))
        ]


def start_sink(folder: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    controller = Controller(MailFolder(folder), hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--folder", type=Path, default=Path("var/emails"))
    args = parser.parse_args()
    controller = start_sink(args.folder, args.host, args.port)
    print(f"SMTP sink on {args.host}:{args.port}, writing to {args.folder.resolve()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
