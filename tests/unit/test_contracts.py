"""What the contracts refuse, whoever publishes it."""

from __future__ import annotations

import pytest

from shared.command_intake import read_command
from shared.contracts import Envelope, OrderSnapshot
from shared.envelope_parsing import parse_envelope
from shared.settlement import UnprocessableMessageError
from tests.factories import encode, envelope, order_snapshot


@pytest.mark.parametrize("field", ["marketplace", "marketplace_order_id"])
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_an_order_named_by_blank_text_is_unprocessable(field: str, blank: str) -> None:
    body = encode(envelope(order_snapshot(**{field: blank})))
    with pytest.raises(UnprocessableMessageError, match=f"data.{field}"):
        parse_envelope(body, Envelope[OrderSnapshot])


def test_an_order_id_with_spaces_around_it_is_kept_as_it_is() -> None:
    body = encode(envelope(order_snapshot(" M1 ")))
    assert parse_envelope(body, Envelope[OrderSnapshot]).data.marketplace_order_id == " M1 "


@pytest.mark.parametrize("marketplace", [" ", "m" * 150])
def test_a_command_that_names_no_real_order_is_answered_with_the_reason(marketplace: str) -> None:
    data = {"command_id": "c1", "marketplace": marketplace, "marketplace_order_id": "M1"}
    received = read_command(encode(envelope(data, "order.accept")))
    assert received.command is None and received.ref is None
    assert received.problem is not None and "marketplace" in received.problem
    assert received.command_id == "c1"  # so the rejection still reaches the caller
