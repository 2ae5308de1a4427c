"""A delivery's body into its envelope, or the reason it cannot be handled (how a delivery is
then settled is :mod:`shared.settlement`); and the envelope's ids bound to every log line
while it is handled."""

from __future__ import annotations

from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from shared.contracts import Envelope
from shared.settlement import UnprocessableMessageError

#: Larger bodies are rejected before parsing: no legitimate order or command comes near it.
MAX_BODY_BYTES = 1_048_576

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors()[:5]
    ]
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def parse_envelope(body: bytes, model: type[ModelT]) -> ModelT:
    """Parse and validate a delivery's body, or say why it cannot be handled."""
    if len(body) > MAX_BODY_BYTES:
        raise UnprocessableMessageError(
            f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES} bytes limit"
        )
    if b"\\u0000" in body or b"\x00" in body:
        raise UnprocessableMessageError(
            "invalid message: text contains a NUL character, which PostgreSQL cannot store"
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise UnprocessableMessageError(
            f"invalid message: {describe_validation_error(exc)}"
        ) from None


def bind_envelope(envelope: Envelope[Any]) -> None:
    """Every log line while this message is handled names it, its order and its correlation."""
    structlog.contextvars.bind_contextvars(
        message_id=str(envelope.id),
        message_type=envelope.type,
        correlation_id=envelope.correlation_id,
        order_id=getattr(envelope.data, "marketplace_order_id", None),
    )
