"""What this process last wrote to, or read from, each hold's status: whether the copy of a hold that an event
or a timer hands over is current, so that the handler need not read it again.

The handlers decide from a hold's status (its phase, its prior-state record), so they must never decide from
a copy older than their own last write: that would re-plan a hold whose target is already changed and record
the changed values as the prior state. The copy kopf hands over lags the API server by a watch event, so the
handlers used to re-read the status on every call, one GET per hold per interval. The operator is the only
writer of a hold's lifecycle fields (one leader; one lock per hold), so a copy that shows everything this
process last wrote or read is at least as new as the operator's own last write, and is used as it is.

Anything else reads again: a hold this process has not written or read yet (unless it has no status at all:
a hold just created, that nobody has acted on), and a copy that differs in any field this process knows (our
write not yet seen, or someone else's since, such as the loop's incident record).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) applied to `base`, as the API server applies a status write."""
    result = dict(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            base_value = result.get(key)
            result[key] = merged(base_value if isinstance(base_value, Mapping) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class KnownStatus:
    def __init__(self) -> None:
        self._by_uid: dict[str, dict[str, Any]] = {}

    def current(self, uid: str, status: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """`status` (a handed-over copy) when it is as new as what this process knows, else None: read it."""
        seen = dict(status or {})
        known = self._by_uid.get(uid)
        if known is None:
            return seen if not seen else None
        return seen if all(seen.get(key) == value for key, value in known.items()) else None

    def read(self, uid: str, status: Mapping[str, Any]) -> None:
        self._by_uid[uid] = copy.deepcopy(dict(status))

    def wrote(self, uid: str, fragment: Mapping[str, Any]) -> None:
        """After a merge patch of the status landed: the fields it does not name keep what was known of them."""
        self._by_uid[uid] = merged(self._by_uid.get(uid, {}), fragment)

    def forget(self, uid: str) -> None:
        """A hold that ended (or is gone) is never acted on again: nothing of it is kept."""
        self._by_uid.pop(uid, None)

    def __len__(self) -> int:
        return len(self._by_uid)
