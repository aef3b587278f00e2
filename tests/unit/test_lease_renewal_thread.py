"""The Lease is renewed on a thread of its own: a burst of handler work in the default pool cannot make the
leader miss its renewal deadline (and exit)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from sequestra.controller.leader import LeaseElector, LeaseTiming


def test_a_renewal_does_not_wait_behind_a_saturated_handler_pool() -> None:
    elector = LeaseElector("ns", identity="me", timing=LeaseTiming(), api_client=client.ApiClient())
    elector.try_acquire_or_renew = lambda: "me"  # type: ignore[method-assign]  # the API call is not the point
    release = threading.Event()

    async def scenario() -> str | None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        busy = [asyncio.to_thread(release.wait, 30) for _ in range(4)]  # every handler thread taken, and a queue
        tasks = [asyncio.ensure_future(b) for b in busy]
        await asyncio.sleep(0.1)
        try:
            return await asyncio.wait_for(elector._attempt(), timeout=2.0)
        finally:
            release.set()
            await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == "me"
