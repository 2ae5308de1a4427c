from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.processor.commands import Decision, already_in_flight
from services.processor.commands import decide as decide_with
from services.processor.lifecycle import Action
from services.processor.rules import MarketplaceRules
from shared.command_intake import request_digest
from shared.contracts import (
    AcceptOrder,
    LengowStatus,
    OrderCommand,
    RefundOrder,
    RefuseOrder,
    ShipOrder,
)

S = LengowStatus
#: Lengow's document in the contract fixtures: codes (CLSM, OTHER...) differ from labels.
DOCUMENT = json.loads(
    (Path(__file__).parents[1] / "contract" / "fixtures" / "marketplaces.json").read_text()
)
RULES = MarketplaceRules.from_document("manomano_fr", DOCUMENT["manomano_fr"])


def decide(command: OrderCommand, status: LengowStatus | None) -> Decision:
    return decide_with(command, status, RULES)


REF = {"marketplace": "manomano_fr", "marketplace_order_id": "M1", "command_id": "c-1"}

COMMANDS: dict[Action, OrderCommand] = {
    Action.ACCEPT: AcceptOrder(**REF),
    Action.REFUSE: RefuseOrder(**REF),
    Action.SHIP: ShipOrder(**REF, carrier="Colissimo", tracking_number="6A123"),
    Action.REFUND: RefundOrder(
        **REF, refund_reason="product_unavailable", refund_shipping_fees=True
    ),
}
ALLOWED = {
    S.WAITING_ACCEPTANCE: {Action.ACCEPT, Action.REFUSE},
    S.WAITING_SHIPMENT: {Action.SHIP},
    S.SHIPPED: {Action.REFUND},
}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("action", list(Action))
def test_each_action_at_each_status(status: S, action: Action) -> None:
    decision = decide(COMMANDS[action], status)
    if action in ALLOWED.get(status, set()):
        assert decision.accepted, decision.refusal
    else:
        assert decision.refusal is not None
        assert decision.refusal.startswith(f"order M1 is {status}: {action} is not allowed")


def test_unknown_order_is_refused() -> None:
    decision = decide(COMMANDS[Action.ACCEPT], None)
    assert decision.refusal == "order M1 is unknown: no order with this id has been seen"


def test_ship_with_a_listed_carrier_passes_the_lengow_arguments_with_its_code() -> None:
    decision = decide(COMMANDS[Action.SHIP], S.WAITING_SHIPMENT)  # "Colissimo", the label
    assert decision.arguments == {"carrier": "CLSM", "tracking_number": "6A123"}
    by_code = decide(ShipOrder(**REF, carrier="CLSM"), S.WAITING_SHIPMENT)
    assert by_code.arguments == {"carrier": "CLSM"}


def test_carrier_name_is_sent_only_with_other() -> None:
    command = ShipOrder(**REF, carrier="Colissimo", carrier_name="La Poste")
    assert "carrier_name" not in decide(command, S.WAITING_SHIPMENT).arguments


def test_ship_with_a_carrier_outside_the_document_lists_the_accepted_values() -> None:
    decision = decide(ShipOrder(**REF, carrier="Pigeon voyageur"), S.WAITING_SHIPMENT)
    assert decision.refusal is not None
    assert "CLSM (Colissimo)" in decision.refusal
    assert "OTHER (Other)" in decision.refusal


def test_line_level_ship_keeps_each_line() -> None:
    command = ShipOrder(**REF, carrier="DPD", line_ids=["M1-1", "M1-2"])
    decision = decide(command, S.WAITING_SHIPMENT)
    assert decision.arguments == {"carrier": "DPD_FR", "line": ["M1-1", "M1-2"]}


def test_before_lengows_document_is_read_values_cannot_be_checked_and_are_refused() -> None:
    fallback = MarketplaceRules.fallback("manomano_fr", carriers=[], refund_reasons=[])
    decision = decide_with(COMMANDS[Action.SHIP], S.WAITING_SHIPMENT, fallback)
    assert decision.refusal is not None
    assert "cannot be checked" in decision.refusal
    configured = MarketplaceRules.fallback(
        "manomano_fr", carriers=["colissimo"], refund_reasons=["other"]
    )
    assert decide_with(
        ShipOrder(**REF, carrier="Colissimo"), S.WAITING_SHIPMENT, configured
    ).arguments == {"carrier": "colissimo"}


def test_ship_with_other_and_both_fields() -> None:
    command = ShipOrder(
        **REF,
        carrier="Other",
        carrier_name="Transports Dupont",
        tracking_url="https://dupont.example/track/1",
    )
    decision = decide(command, S.WAITING_SHIPMENT)
    assert decision.accepted
    assert decision.arguments["carrier_name"] == "Transports Dupont"


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"carrier_name": "Transports Dupont"}, "tracking_url"),
        ({"tracking_url": "https://dupont.example/t"}, "carrier_name"),
        ({"carrier_name": " ", "tracking_url": ""}, "carrier_name, tracking_url"),
    ],
)
def test_ship_with_other_needs_both_fields(fields: dict[str, str], missing: str) -> None:
    decision = decide(ShipOrder(**REF, carrier="Other", **fields), S.WAITING_SHIPMENT)
    assert decision.refusal == (
        f"carrier Other needs carrier_name and tracking_url (missing: {missing})"
    )


def test_ship_with_an_unknown_carrier_is_refused() -> None:
    decision = decide(ShipOrder(**REF, carrier="Pigeon"), S.WAITING_SHIPMENT)
    assert decision.refusal is not None
    assert "carrier 'Pigeon' is not in the marketplace's list" in decision.refusal


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({}, "refund_reason, refund_shipping_fees"),
        ({"refund_shipping_fees": False}, "refund_reason"),
        ({"refund_reason": "other"}, "refund_shipping_fees"),
    ],
)
def test_refund_needs_both_fields(fields: dict[str, object], missing: str) -> None:
    decision = decide(RefundOrder(**REF, **fields), S.SHIPPED)  # type: ignore[arg-type]
    assert decision.refusal == (
        f"refund needs refund_reason and refund_shipping_fees (missing: {missing})"
    )


def test_refund_reason_must_be_accepted() -> None:
    command = RefundOrder(**REF, refund_reason="changed my mind", refund_shipping_fees=True)
    decision = decide(command, S.SHIPPED)
    assert decision.refusal is not None
    assert "refund_reason 'changed my mind' is not accepted" in decision.refusal


def test_a_second_refund_in_flight_is_refused_with_the_first_commands_id() -> None:
    @dataclass(frozen=True)
    class InFlight:
        command_id: str
        arguments: dict[str, object]

    refund = COMMANDS[Action.REFUND]
    decision = decide(refund, S.SHIPPED)
    refusal = already_in_flight(refund, decision, [InFlight("refund-1", {})])
    assert refusal is not None
    assert "command refund-1 was accepted" in refusal
    assert already_in_flight(refund, decision, []) is None

    ship = ShipOrder(**REF, carrier="Colissimo", line_ids=["L2"])
    ship_decision = decide(ship, S.WAITING_SHIPMENT)
    assert already_in_flight(ship, ship_decision, [InFlight("s1", {"line": ["L1"]})]) is None
    assert already_in_flight(ship, ship_decision, [InFlight("s1", {"line": ["L2"]})])
    assert already_in_flight(ship, ship_decision, [InFlight("s1", {})])  # the whole order
    accept = COMMANDS[Action.ACCEPT]
    accept_decision = decide(accept, S.WAITING_ACCEPTANCE)
    assert already_in_flight(accept, accept_decision, [InFlight("a1", {})]) is None


def test_the_request_digest_ignores_the_command_id_only() -> None:
    one = request_digest("order.ship", {"command_id": "a", "carrier": "colissimo"})
    assert one == request_digest("order.ship", {"carrier": "colissimo", "command_id": "b"})
    assert one != request_digest("order.ship", {"command_id": "a", "carrier": "chronopost"})
    assert one != request_digest("order.refund", {"command_id": "a", "carrier": "colissimo"})
