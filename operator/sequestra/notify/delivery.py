"""Posting JSON to webhooks with a timeout and bounded retries; never raises, always says how it went.

Webhook URLs often carry their secret in the path (Slack's do), so logs name only scheme and host."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

log = structlog.get_logger("sequestra.notify")


def redact(url: str) -> str:
    """scheme://host[:port] — enough to tell endpoints apart; no credentials, secret path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else "<invalid url>"


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    attempts: int
    status: int | None = None  # the last HTTP status, None when no answer came
    error: str = ""


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass(frozen=True)
class Delivery:
    """POST a JSON document: `retries` more attempts after the first on no answer, 429 or 5xx, waiting
    `backoff_s`, then twice and four times that,. Other 4xx answers are final: repeating a rejected body won't help."""

    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def post(self, url: str, payload: Any, *, headers: dict[str, str] | None = None) -> DeliveryResult:
        status: int | None = None
        error = ""
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            attempts += 1
            try:
                response = httpx.post(url, json=payload, headers=headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:  # refused, timed out, reset, bad URL
                status, error = None, f"{type(exc).__name__}: {exc}".replace(url, redact(url))
                continue
            status = response.status_code
            if response.is_success:
                return DeliveryResult(ok=True, attempts=attempts, status=status)
            error = f"HTTP {status}: {response.text[:200]}"
            if not _retryable(status):
                break
        log.warning("notify.delivery_failed", endpoint=redact(url), attempts=attempts, status=status, error=error)
        return DeliveryResult(ok=False, attempts=attempts, status=status, error=error)
