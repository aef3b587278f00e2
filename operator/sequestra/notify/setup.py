"""Notify's parts as the settings configure them; a part whose URL is unset is None (switched off)."""

from __future__ import annotations

from dataclasses import dataclass

from sequestra.notify.digest import DigestBatcher, WebhookSink
from sequestra.notify.pager import Pager
from sequestra.notify.silences import SilenceManager
from sequestra.settings import Settings


@dataclass
class Notifiers:
    silences: SilenceManager | None
    digests: DigestBatcher | None
    pager: Pager | None

    def close(self) -> None:
        """Send the digests still open and release connections (operator shutdown)."""
        if self.digests is not None:
            self.digests.close()
        if self.silences is not None:
            self.silences.close()


def from_settings(settings: Settings, *, start: bool = True) -> Notifiers:
    """Build (and with `start`, start the digest sender thread of) what the settings switch on."""
    sinks = []
    if settings.digest_slack_webhook_url is not None:
        sinks.append(WebhookSink.slack(settings.digest_slack_webhook_url.get_secret_value()))
    if settings.digest_webhook_url:
        sinks.append(WebhookSink.generic(settings.digest_webhook_url))
    digests = DigestBatcher(sinks, window_s=settings.digest_window_s) if sinks else None
    if digests is not None and start:
        digests.start()
    routing_key = settings.pagerduty_routing_key.get_secret_value() if settings.pagerduty_routing_key else None
    pager = Pager(alertmanager_url=settings.pager_alertmanager_url, pagerduty_url=settings.pagerduty_url,
                  routing_key=routing_key)
    return Notifiers(
        silences=SilenceManager(settings.alertmanager_url) if settings.alertmanager_url else None,
        digests=digests,
        pager=pager if pager.configured else None,
    )
