"""Lengow's action protocol as its plugins follow it: pure rules, no I/O.

A command's action becomes one Lengow action per order line for line-level actions (``line``
is one ``marketplace_order_line_id``, never a list), else one. Each of them is a *part*,
which moves through:

- ``new``: never sent;
- ``sending``: the POST left and no answer said what became of it (in doubt): Lengow's list of
  the order's actions is read, and a matching action adopted, before anything is sent again;
- ``sent``: Lengow gave its id; its verdict is read until the marketplace answers;
- ``succeeded`` / ``failed``: the marketplace's verdict (or "too old" after 3 days).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

PartState = Literal["new", "sending", "sent", "succeeded", "failed"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed"})

#: An action Lengow lists may carry a clock a little apart from ours.
CLOCK_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class Waiting:
    """Lengow or the marketplace has not answered yet."""


@dataclass(frozen=True)
class Succeeded:
    lengow_action_id: str


@dataclass(frozen=True)
class Failed:
    reason: str


Verdict = Waiting | Succeeded | Failed


def _text(value: Any) -> str:
    if isinstance(value, list):  # older answers carry a list of messages
        return "; ".join(str(item) for item in value if item not in (None, ""))
    return "" if value is None else str(value).strip()


def verdict(found: Mapping[str, Any]) -> Verdict:
    """The verdict of an action as Lengow lists it, read as all four plugins read it."""
    errors = _text(found.get("errors"))
    if found.get("queued") is True and not errors:
        return Waiting()
    if found.get("processed") is True and not errors:
        return Succeeded(str(found.get("id")))
    if errors:
        return Failed(errors)
    return Waiting()  # not queued, not processed, no error: the marketplace has not answered


def split_into_parts(arguments: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The arguments of each Lengow action a command needs: one per line when ``line`` is a
    list, with ``line`` a single line id."""
    lines = arguments.get("line")
    if isinstance(lines, list | tuple):
        rest = {k: v for k, v in arguments.items() if k != "line"}
        return [{**rest, "line": str(line)} for line in lines] or [rest]
    return [dict(arguments)]


def normalised(value: Any) -> str:
    """A value as it travels in a form field (Lengow may echo it back either way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def matches(
    found: Mapping[str, Any],
    *,
    action_type: str,
    arguments: Mapping[str, Any],
    not_before: datetime | None = None,
) -> bool:
    """Whether Lengow's ``found`` action is the one these arguments describe: same type,
    same value for every argument we send, and (when dated) not older than our record."""
    if found.get("action_type") != action_type:
        return False
    for key, value in arguments.items():
        if value is None or value == "":
            continue
        if key not in found or normalised(found[key]) != normalised(value):
            return False
    if not_before is not None and (created := parse_time(found.get("created_at"))):
        return created >= not_before - CLOCK_MARGIN
    return True


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def adopt(
    listed: Iterable[Mapping[str, Any]],
    *,
    action_type: str,
    arguments: Mapping[str, Any],
    not_before: datetime | None,
    taken: Collection[str],
) -> str | None:
    """The id of the listed action that is ours, if Lengow has one (an id another part of
    ours already holds is not ours)."""
    for found in listed:
        action_id = str(found.get("id"))
        if action_id in taken:
            continue
        if matches(found, action_type=action_type, arguments=arguments, not_before=not_before):
            return action_id
    return None


def too_old(created_at: datetime, now: datetime, timeout: timedelta) -> bool:
    """The plugins close an action still unfinished after 3 days."""
    return now - created_at > timeout


@dataclass(frozen=True)
class CommandOutcome:
    """What a command's parts add up to: still open, or one verdict for the whole command."""

    state: Literal["open", "succeeded", "failed"]
    errors: tuple[str, ...] = ()


def command_outcome(parts: Sequence[tuple[str, str | None, Sequence[str]]]) -> CommandOutcome:
    """``parts`` as ``(state, line, errors)``: failed as soon as one part failed (naming its
    line), succeeded once every part succeeded."""
    failed = [(line, errors) for state, line, errors in parts if state == "failed"]
    if failed:
        return CommandOutcome(
            "failed",
            tuple(
                f"line {line}: {error}" if line else error
                for line, errors in failed
                for error in errors
            ),
        )
    if parts and all(state == "succeeded" for state, _, _ in parts):
        return CommandOutcome("succeeded")
    return CommandOutcome("open")
