"""SMTP adapter: composes the invoice email and delivers it with aiosmtplib.

Failures are sorted for the caller: a temporary one (connection refused, timeout, 4xx) is
worth retrying; a permanent one (5xx, such as an unknown recipient) is not; one that happened
after the message's content left (the server's final answer never came) is *in doubt*: the
server may have taken the email, so it is not sent again as if it had not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from datetime import UTC, datetime
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from typing import Literal

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus
from email_validator import EmailNotValidError, validate_email

from services.notifier.invoice import Invoice
from services.notifier.rendering import RenderedEmail
from services.notifier.settings import NotifierSettings


class DeliveryError(Exception):
    """The invoice email was not delivered."""


class TemporaryDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass


class InDoubtDeliveryError(DeliveryError):
    """The content was sent and the server's answer did not come: it may have been
    delivered."""


class _ContentTrackingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, with DATA sent in two visible steps so that a failure can be told
    apart: before the content left (nothing delivered) or after (in doubt). Written here
    because aiosmtplib's ``data()`` does both steps in one call and reports either the same
    way; the steps are those of ``SMTPProtocol.execute_data_command``."""

    content_sent = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
    ) -> SMTPResponse:
        wait = self.timeout if timeout is Default.token else timeout
        start = await self.execute_command(b"DATA", timeout=wait)
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        raw = message.encode("ascii") if isinstance(message, str) else message
        payload = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.content_sent = True
        try:
            protocol.write(payload)
            response = await protocol.read_response(timeout=wait)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response


def one_line(text: str) -> str:
    """Header values never carry line breaks (no header injection)."""
    return " ".join(text.split())


def _boundary() -> str:
    """A MIME boundary that no content can contain: base64 and quoted-printable never
    produce "=_" followed by 32 hex digits and "_="."""
    return f"=_{uuid.uuid4().hex}_="


def _encoded(text: str) -> str:
    """ASCII as it is; anything else as RFC 2047 encoded words."""
    return text if text.isascii() else Header(text, "utf-8").encode()


def checked_recipient(address: str | None) -> str:
    """The customer's address, normalised, or :class:`PermanentDeliveryError` saying why not."""
    if not address:
        raise PermanentDeliveryError("the order has no billing email address")
    if address != one_line(address) or " " in address:
        raise PermanentDeliveryError(f"invalid billing email address {address!r}")
    try:
        # No SMTPUTF8: an address that needs it could not be written in the To header.
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise PermanentDeliveryError(f"invalid billing email address {address!r}: {exc}") from None


def message_id_for(invoice: Invoice, domain: str) -> str:
    """Stable for an invoice, so a retry after a crash is recognisable downstream."""
    digest = hashlib.sha256(f"{invoice.marketplace}:{invoice.order_id}".encode()).hexdigest()
    return f"<{invoice.number}.{digest[:16]}@{domain}>"


#: A kept session unused for longer is closed rather than reused: servers drop idle sessions
#: (Postfix after 300 s), and a fresh one costs little next to an email.
IDLE_SESSION_SECONDS = 30.0


class InvoiceMailer:
    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self.domain = settings.mail_from.rpartition("@")[2] or "localhost"
        self._sessions = asyncio.Semaphore(settings.smtp_max_connections)
        self._idle: list[tuple[_ContentTrackingSMTP, float]] = []

    def compose(
        self, invoice: Invoice, rendered: RenderedEmail, pdf: bytes, recipient: str, message_id: str
    ) -> Message:
        """The email, or :class:`PermanentDeliveryError` when the data cannot make one."""
        try:
            return self._compose(invoice, rendered, pdf, recipient, message_id)
        except (ValueError, TypeError) as exc:  # header defects are ValueErrors
            raise PermanentDeliveryError(f"cannot compose the email: {exc}") from None

    def _compose(
        self, invoice: Invoice, rendered: RenderedEmail, pdf: bytes, recipient: str, message_id: str
    ) -> Message:
        # The compat32 classes: the modern EmailMessage API builds a header class per header
        # set and took more time than rendering the PDF. Every header value is one line.
        # Boundaries given rather than drawn: drawing one scans the whole body for a clash.
        message = MIMEMultipart("mixed", boundary=_boundary())
        message["Subject"] = _encoded(one_line(rendered.subject))
        message["From"] = formataddr(
            (one_line(self._settings.mail_from_name), self._settings.mail_from), "utf-8"
        )
        message["To"] = formataddr((one_line(invoice.customer.name), recipient), "utf-8")
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(datetime.now(UTC))
        message["X-Invoice-Number"] = _encoded(one_line(invoice.number))
        message["X-Marketplace-Order-Id"] = _encoded(one_line(invoice.order_id))
        # invoice or credit_note: so that mail rules (and our tests) tell them apart.
        message["X-Document-Kind"] = invoice.kind.value
        bodies = MIMEMultipart("alternative", boundary=_boundary())
        bodies.attach(MIMEText(rendered.text, "plain", "utf-8"))
        bodies.attach(MIMEText(rendered.html, "html", "utf-8"))
        message.attach(bodies)
        attachment = MIMEApplication(pdf, "pdf")
        attachment.add_header("Content-Disposition", "attachment", filename=f"{invoice.number}.pdf")
        message.attach(attachment)
        return message

    async def send(self, message: Message) -> None:
        """Deliver on a session kept from an earlier email when one is free, else on a new
        one. A kept session that the server has closed meanwhile is replaced once, unless the
        content had left: then the email is in doubt (:class:`InDoubtDeliveryError`)."""
        async with self._sessions:
            client: _ContentTrackingSMTP | None = None
            try:
                client = self._take_idle()
                if client is not None:
                    try:
                        await self._send_on(client, message)
                        return
                    except (aiosmtplib.SMTPServerDisconnected, OSError, TimeoutError):
                        if client.content_sent:
                            raise
                        # Dropped while idle: the server never took this email.
                client = await self._connect()
                await self._send_on(client, message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise self._sorted(
                    exc, in_doubt=client is not None and client.content_sent
                ) from None

    async def close(self) -> None:
        """Say goodbye on every kept session (at shutdown)."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()

    def _take_idle(self) -> _ContentTrackingSMTP | None:
        while self._idle:
            client, since = self._idle.pop()
            if time.monotonic() - since < IDLE_SESSION_SECONDS and client.is_connected:
                return client
            client.close()
        return None

    async def _connect(self) -> _ContentTrackingSMTP:
        settings = self._settings
        client = _ContentTrackingSMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=(
                settings.smtp_password.get_secret_value() or None
                if settings.smtp_password
                else None
            ),
            use_tls=settings.smtp_security == "tls",
            start_tls=settings.smtp_security == "starttls",
            timeout=settings.smtp_timeout_seconds,
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    async def _send_on(self, client: _ContentTrackingSMTP, message: Message) -> None:
        """Send, then keep the session for the next email; on any failure, drop it."""
        client.content_sent = False
        try:
            await client.send_message(message)
        except BaseException:
            client.close()
            raise
        self._idle.append((client, time.monotonic()))

    def _sorted(self, exc: BaseException, *, in_doubt: bool) -> DeliveryError:
        """A temporary, permanent or in-doubt failure, with what the server said."""
        settings = self._settings
        if in_doubt and not isinstance(exc, aiosmtplib.SMTPResponseException):
            return InDoubtDeliveryError(
                f"the message's content was sent to {settings.smtp_host}:{settings.smtp_port}"
                f" and its answer did not come: {type(exc).__name__}: {exc}"
            )
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [error.code for error in exc.recipients]
            text = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            if all(code >= 500 for code in codes):
                return PermanentDeliveryError(f"recipient refused: {text}")
            return TemporaryDeliveryError(f"recipient deferred: {text}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            failure = f"SMTP server answered {exc.code} {exc.message}"
            if exc.code >= 500:
                return PermanentDeliveryError(failure)
            return TemporaryDeliveryError(failure)
        return TemporaryDeliveryError(
            f"SMTP server {settings.smtp_host}:{settings.smtp_port} unreachable:"
            f" {type(exc).__name__}: {exc}"
        )
