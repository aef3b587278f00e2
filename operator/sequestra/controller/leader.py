"""Leader election over a coordination.k8s.io Lease, so that of several replicas only one acts.

The rules are client-go's: a replica takes the Lease when nobody holds it or when its record has not
changed for a whole lease duration *as this replica's own clock measures it* (no comparison of clocks
across machines); the holder renews it every renew period. A holder that cannot renew within the renew
deadline, which is shorter than the lease duration, stops acting at once — it exits, and the Deployment
restarts it as a waiting replica — so it has stopped before anyone else may take over: two replicas never
act at the same time, and nothing is done twice.

kopf's own peering is not used: it pauses a replica's handlers but does not stop one that lost contact,
and needs a cluster-wide CRD of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import structlog
from kubernetes import client, config
from kubernetes.client.rest import ApiException

log = structlog.get_logger("sequestra.leader")

DEFAULT_LEASE_NAME = "sequestra-leader"
# Exit status of a replica that lost the Lease: distinct, so a restart count says why.
EXIT_LEADERSHIP_LOST = 75


@dataclass(frozen=True)
class LeaseTiming:
    duration_s: float = 15.0
    renew_period_s: float = 5.0
    retry_period_s: float = 1.0  # after a failed renewal, and between a waiting replica's attempts

    def __post_init__(self) -> None:
        if not 0 < self.renew_period_s < self.renew_deadline_s:
            raise ValueError(f"the renew period ({self.renew_period_s:g} s) must be shorter than two thirds of the "
                             f"lease duration ({self.duration_s:g} s), else a healthy leader would lose its Lease")

    @property
    def renew_deadline_s(self) -> float:
        """The leader stops acting after this long without a renewal; the rest of the lease duration is
        the margin for the last write in flight and for clocks running at slightly different rates."""
        return self.duration_s * 2 / 3


class LeadershipLost(RuntimeError):
    pass


def default_identity() -> str:
    """The pod's name in a cluster (downward API); host and PID elsewhere, unique per process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def load_api_client() -> client.ApiClient:
    """In a pod, its ServiceAccount; elsewhere, the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return client.ApiClient(configuration)


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """Blocking calls (the kubernetes client); the async methods run them in worker threads."""

    def __init__(self, namespace: str, name: str = DEFAULT_LEASE_NAME, identity: str | None = None,
                 timing: LeaseTiming | None = None, api_client: client.ApiClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing or LeaseTiming()
        self._api = client.CoordinationV1Api(api_client or load_api_client())
        self._clock = clock
        self._observed_version: str | None = None
        self._observed_at = 0.0
        # A thread of its own: in the handlers' pool a renewal would wait behind a burst of their API calls,
        # and a Lease not renewed in time makes the process exit (a slow API server then ends the leader).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sequestra-lease")

    def _lease(self, holder: str | None, acquired: datetime | None, transitions: int,
               resource_version: str | None = None) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace, resource_version=resource_version,
                                         labels={"app.kubernetes.io/part-of": "sequestra"}),
            spec=client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=round(self.timing.duration_s),
                                    acquire_time=acquired, renew_time=_now(), lease_transitions=transitions))

    def try_acquire_or_renew(self) -> str | None:
        """One attempt. Returns who holds the Lease afterwards (this replica's identity on success), or
        None when the API server could not be asked (the caller decides how long that may last)."""
        timeout = self.timing.renew_period_s
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("leader.read_failed", lease=self.name, status=exc.status, reason=exc.reason)
                return None
            try:
                self._api.create_namespaced_lease(self.namespace, self._lease(self.identity, _now(), 0),
                                                  _request_timeout=timeout)
            except ApiException as create_exc:
                if create_exc.status == 409:  # another replica created it first
                    return self.try_acquire_or_renew()
                log.warning("leader.create_failed", lease=self.name, status=create_exc.status,
                            reason=create_exc.reason)
                return None
            self._observed_version, self._observed_at = None, self._clock()
            log.info("leader.acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity, previous=None)
            return self.identity
        spec = lease.spec or client.V1LeaseSpec()
        if lease.metadata.resource_version != self._observed_version:
            self._observed_version, self._observed_at = lease.metadata.resource_version, self._clock()
        holder = spec.holder_identity or None
        duration = spec.lease_duration_seconds or self.timing.duration_s
        if holder not in (None, self.identity) and self._clock() - self._observed_at < duration:
            return holder
        ours = holder == self.identity
        renewed = self._lease(self.identity, spec.acquire_time if ours else _now(),
                              (spec.lease_transitions or 0) + (0 if ours else 1), lease.metadata.resource_version)
        try:
            # A replace carries the resourceVersion read above: of two replicas racing, one gets 409.
            written = self._api.replace_namespaced_lease(self.name, self.namespace, renewed,
                                                         _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:
                return holder if holder not in (None, self.identity) else None
            log.warning("leader.renew_failed", lease=self.name, status=exc.status, reason=exc.reason)
            return None
        self._observed_version, self._observed_at = written.metadata.resource_version, self._clock()
        if not ours:
            log.info("leader.acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity,
                     previous=holder)
        return self.identity

    def release(self) -> None:
        """On a clean shutdown: hand the Lease over now instead of after it expires."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            if (lease.spec and lease.spec.holder_identity) != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = _now()
            self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
            log.info("leader.released", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        except (ApiException, OSError) as exc:  # the Lease expires by itself
            log.warning("leader.release_failed", lease=self.name, error=str(exc))

    async def _attempt(self) -> str | None:
        try:
            attempt = asyncio.get_running_loop().run_in_executor(self._thread, self.try_acquire_or_renew)
            return await asyncio.wait_for(attempt, timeout=self.timing.renew_period_s * 1.5)
        except (TimeoutError, OSError) as exc:
            log.warning("leader.unreachable", lease=self.name, error=repr(exc))
            return None

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        reported = None
        while (holder := await self._attempt()) != self.identity:
            if holder != reported:
                log.info("leader.waiting", lease=f"{self.namespace}/{self.name}", identity=self.identity,
                         holder=holder)
                reported = holder
            await asyncio.sleep(self.timing.retry_period_s)

    async def keep(self) -> None:
        """Renew until the Lease is lost; then raise LeadershipLost (never returns otherwise)."""
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(self.timing.renew_period_s)
            while True:
                holder = await self._attempt()
                if holder == self.identity:
                    last_renewal = self._clock()
                    break
                if holder is not None:
                    raise LeadershipLost(f"the Lease {self.namespace}/{self.name} is held by {holder} now")
                if self._clock() - last_renewal > self.timing.renew_deadline_s:
                    raise LeadershipLost(f"could not renew the Lease {self.namespace}/{self.name} for "
                                         f"{self._clock() - last_renewal:.0f} s")
                await asyncio.sleep(self.timing.retry_period_s)


@contextlib.asynccontextmanager
async def health_while_waiting(liveness_url: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while waiting for the Lease (kopf serves it once this replica leads),
    so the kubelet does not restart a healthy standby."""
    if not liveness_url:
        yield
        return
    from aiohttp import web

    parsed = urlparse(liveness_url)

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "state": "waiting for the lease"})

    app = web.Application()
    app.router.add_get(parsed.path or "/", healthy)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parsed.hostname or "0.0.0.0", parsed.port or 80).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _acquire_unless_stopped(elector: LeaseElector) -> bool:
    """Wait for the Lease; False when SIGTERM or SIGINT came first. In a pod the process is its container's
    PID 1, which the kernel spares every signal it has no handler for: without these handlers a waiting replica
    ignored SIGTERM (a rollout, a drain, `helm uninstall`) until the kubelet killed it after its grace period
    (30 s). kopf installs handlers of its own once this replica leads."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    acquiring = asyncio.create_task(elector.acquire(), name="leader-acquire")
    stopping = asyncio.create_task(stop.wait(), name="leader-stop")
    try:
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        stopping.cancel()
    if not stop.is_set():
        return True
    acquiring.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acquiring
    if acquiring.cancelled():
        log.info("leader.stopped_waiting", lease=f"{elector.namespace}/{elector.name}", identity=elector.identity)
        return False
    await asyncio.to_thread(elector.release)  # taken in the same moment: hand it over, act on nothing
    return False


async def run_as_leader(elector: LeaseElector, operator: Callable[[], Awaitable[Any]],
                        liveness_url: str | None = None) -> None:
    """Wait for the Lease, then run the operator while renewing it. Losing the Lease ends the process
    at once: a graceful stop would let running handlers keep acting while another replica takes over."""
    async with health_while_waiting(liveness_url):
        if not await _acquire_unless_stopped(elector):
            return
    keeper = asyncio.create_task(elector.keep(), name="leader-election")
    work = asyncio.create_task(_run(operator), name="operator")
    done, _ = await asyncio.wait({keeper, work}, return_when=asyncio.FIRST_COMPLETED)
    if keeper in done:
        log.error("leader.lost", lease=f"{elector.namespace}/{elector.name}", identity=elector.identity,
                  error=str(keeper.exception()), exit_status=EXIT_LEADERSHIP_LOST)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_LEADERSHIP_LOST)
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    await asyncio.to_thread(elector.release)
    work.result()


async def _run(operator: Callable[[], Awaitable[Any]]) -> None:
    await operator()
