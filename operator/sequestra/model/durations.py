"""Durations as users write them in custom resources (`90s`, `30m`, `1h30m`)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"invalid duration {text!r}: use hours, minutes and seconds like 1h30m, 45m or 90s")
    return timedelta(hours=int(match["h"] or 0), minutes=int(match["m"] or 0), seconds=int(match["s"] or 0))
