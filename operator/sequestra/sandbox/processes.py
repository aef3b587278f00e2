"""Start, find and stop the sandbox's processes by recorded PID.

A PID alone can be reused by an unrelated process after a reboot or a long time, so each record also
keeps the process's start time from /proc; `stop` only signals a process whose start time still matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    """Exited and waiting to be reaped. A JVM's main thread can exit first and show Z while its other
    threads still run and hold their sockets: only a leader with no other live thread is gone."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            return False
        return len(list(Path(f"/proc/{pid}/task").iterdir())) <= 1
    except OSError:
        return True


def is_alive(record: ProcessRecord) -> bool:
    return _start_ticks(record.pid) == record.start_ticks and not _is_zombie(record.pid)


def read_record(pids_dir: Path, name: str) -> ProcessRecord | None:
    path = pids_dir / f"{name}.json"
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def start(
    pids_dir: Path, name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, niceness: int = 0,
) -> ProcessRecord:
    """Start a detached process (own session, so it outlives the CLI) with output appended to `log`, at
    `niceness` (every thread it starts inherits it)."""
    if niceness:
        # `nice` execs the program in place (same pid); a preexec_fn would run Python in a forked child,
        # which is unsafe while other threads start components of the same wave.
        argv = ["nice", "-n", str(niceness), *argv]
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    ticks = _start_ticks(proc.pid)
    record = ProcessRecord(name=name, pid=proc.pid, start_ticks=ticks or -1, argv=list(argv), log=str(log))
    (pids_dir / f"{name}.json").write_text(json.dumps(asdict(record)))
    return record


def stop(pids_dir: Path, name: str, *, timeout_s: float = 20.0) -> bool:
    """Stop the recorded process (SIGTERM, then SIGKILL after `timeout_s`). True when one was running."""
    record = read_record(pids_dir, name)
    if record is None:
        return False
    was_running = is_alive(record)
    if was_running:
        _signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while is_alive(record) and time.monotonic() < deadline:
            _reap(record.pid)
            time.sleep(0.1)
        if is_alive(record):
            _signal_group(record.pid, signal.SIGKILL)
            while is_alive(record):
                _reap(record.pid)
                time.sleep(0.05)
    (pids_dir / f"{name}.json").unlink(missing_ok=True)
    return was_running


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each component leads its own session; signal the group so helpers it forked go too.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # A component started by this very process becomes a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Every live process whose command line contains `marker` (the sandbox directory): strays show here."""
    found = []
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if marker in cmdline and not _is_zombie(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def resident_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (a JVM or Go binary forks little, but
    the workload-metrics service runs under the interpreter that started it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total
