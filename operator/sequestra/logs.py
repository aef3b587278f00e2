"""One log format for Sequestra and the libraries under it: structlog key-value events, JSON when not
on a TTY, a readable console on one; stdlib logging (kopf, kubernetes, urllib3) routed through it.

A line is for a person reading `kubectl logs`: one event, the fields that matter. kopf's object loggers
attach their internals to every record as extras (kopf/_core/actions/loggers.py: the operator's settings,
a ~2,000-character repr; a flag for kopf's Event poster; the object's reference as a dict); a line keeps
only the object's kind and namespace/name. kopf notes every handler and timer run that succeeded at INFO,
which for the policies' timers is a line per policy every few seconds; those notes are DEBUG here, while
kopf's failures and retries keep their levels. The Events kopf posts are not affected: its poster is a
handler of its own logger and sees each record before it reaches ours.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping

import structlog
from structlog.typing import EventDict, WrappedLogger

# kopf/_core/actions/execution.py logs f"{handler} succeeded." (handler: "Handler 'id'", "Timer 'id'", …) and
# kopf/_core/reactor/processing.py f"{title} is processed: {n} succeeded; {m} failed." after each cause.
_ROUTINE_SUCCESS = re.compile(
    r"(?:Handler|Timer|Daemon) '[^']*' succeeded\.|[\w ]+ is processed: \d+ succeeded; 0 failed\.")
# Extras kopf adds for its own machinery; "k8s_*" covers k8s_skip, k8s_ref and any it adds later.
_KOPF_INTERNAL_PREFIX = "k8s_"
_KOPF_SETTINGS = "settings"


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    render_json = not sys.stderr.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    foreign: list[structlog.types.Processor] = [
        *shared,
        structlog.stdlib.add_logger_name,  # which library spoke: kopf.objects, urllib3, …
        structlog.stdlib.ExtraAdder(),
        kopf_object_identity,
        demote_routine_success,
    ]
    # A traceback as one readable string; the console renderer formats exc_info itself.
    renderer: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()] if render_json
        else [structlog.dev.ConsoleRenderer(colors=False)])
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RoutineSuccessBelowDebug())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def is_routine_success(record: logging.LogRecord) -> bool:
    """kopf's note that a handler or timer ran and succeeded (nothing failed)."""
    return (record.name.startswith("kopf.") and record.levelno == logging.INFO
            and _ROUTINE_SUCCESS.fullmatch(record.getMessage()) is not None)


class RoutineSuccessBelowDebug(logging.Filter):
    """Treats kopf's routine successes as DEBUG: emitted only where their logger is enabled for DEBUG.

    A filter, not a processor: a record the formatter has started cannot be dropped cleanly, and on
    Python 3.11 a filter cannot hand on a changed record, so `demote_routine_success` relabels it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_routine_success(record) or logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def demote_routine_success(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord) and is_routine_success(record):
        event_dict["level"] = "debug"
    return event_dict


def kopf_object_identity(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """kopf's extras reduced to what a reader needs: the object's kind and namespace/name."""
    ref = event_dict.pop("k8s_ref", None)
    event_dict.pop(_KOPF_SETTINGS, None)
    for key in [k for k in event_dict if k.startswith(_KOPF_INTERNAL_PREFIX)]:
        del event_dict[key]
    if isinstance(ref, Mapping) and ref.get("name"):
        namespace, name = ref.get("namespace"), ref["name"]
        event_dict["kind"] = ref.get("kind")
        event_dict["object"] = f"{namespace}/{name}" if namespace else str(name)
    return event_dict
