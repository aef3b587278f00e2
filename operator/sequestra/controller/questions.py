"""Diagnoses asked of a model off the containment path.

A model takes seconds to tens of seconds to answer (10-15 s for a small one on two cores). The loop
contains first, on the rule diagnosis, and asks the model here: each question runs on a daemon thread,
one at a time (a local model server answers one request at a time anyway, and a queue of them would only
time out), and the loop collects the answer at a later interval. A daemon thread, not a pool: an operator
told to stop does not wait for a model that is still thinking; the question is asked again after a restart
(the hold's diagnosis still says it is awaited).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import structlog

from sequestra.model.diagnosis import Diagnosis

log = structlog.get_logger("sequestra.diagnosis")

Key = tuple[str, str]  # the hold's (namespace, name)


class ModelQuestions:
    def __init__(self) -> None:
        self._pending: dict[Key, Future[Diagnosis]] = {}
        self._one_at_a_time = threading.Semaphore(1)

    def asked(self, key: Key) -> bool:
        return key in self._pending

    def ask(self, key: Key, question: Callable[[], Diagnosis]) -> None:
        if key in self._pending:
            return
        future: Future[Diagnosis] = Future()

        def run() -> None:
            with self._one_at_a_time:
                try:
                    future.set_result(question())
                except BaseException as exc:  # the Diagnoser never raises; a bug here must still end the wait
                    log.exception("diagnosis.question_failed", hold=f"{key[0]}/{key[1]}")
                    future.set_exception(exc)

        self._pending[key] = future
        threading.Thread(target=run, daemon=True, name=f"sequestra-diagnosis-{key[1]}"[:60]).start()

    def answer(self, key: Key) -> Diagnosis | BaseException | None:
        """The answer once there (taken: asked again only by `ask`), the exception if the question failed,
        None while it is still being answered or was never asked."""
        future = self._pending.get(key)
        if future is None or not future.done():
            return None
        del self._pending[key]
        return future.exception() or future.result()
