"""When to poll and which window to ask for: pure functions of the clock and the watermark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

PollKind = Literal["incremental", "catchup", "manual"]


@dataclass(frozen=True)
class Window:
    updated_from: datetime
    updated_to: datetime


def incremental_window(
    watermark: datetime | None, now: datetime, *, overlap: timedelta, first_lookback: timedelta
) -> Window:
    """Orders updated since the last successful poll, re-reading ``overlap`` before it so an
    order Lengow indexed late is not missed; the first poll looks ``first_lookback`` back."""
    start = now - first_lookback if watermark is None else watermark - overlap
    return Window(min(start, now), now)


def catchup_window(now: datetime, days: int) -> Window:
    """Every order made or amended in the last ``days`` days."""
    return Window(now - timedelta(days=days), now)


def catchup_due(now: datetime, at: time, last_done: date | None) -> bool:
    """The daily catch-up runs once per (UTC) day, at or after ``at``."""
    return now.time() >= at and (last_done is None or last_done < now.date())
