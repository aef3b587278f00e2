"""Notify's domain exceptions: what failed, against which endpoint, and what to do about it."""

from __future__ import annotations

from typing import ClassVar


class NotifyError(Exception):
    """Base of notify's errors. `retryable` tells a handler whether a later attempt can succeed."""

    retryable: ClassVar[bool] = False


class AlertmanagerUnavailable(NotifyError):
    """Alertmanager did not answer (refused, timed out, 5xx). Nothing was changed; try again later."""

    retryable = True


class AlertmanagerRejected(NotifyError):
    """Alertmanager answered 4xx: the request itself is wrong and repeating it will not help."""
