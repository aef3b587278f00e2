#!/usr/bin/python3
"""A real workload for the sandbox's real node (the entrypoint of the image sandbox/workload_image.py builds):
it idles, burns CPU or grows its memory, as a one-word flag file says, read every half second.

    sequestra-workload --flag-file /flags/mode [--burners 2] [--grow-mib-per-s 16]

- `idle` (or no file): sleeps, a few millicores.
- `burn`: that many busy processes; the container's CPU limit (its CFS quota) is what holds them back.
- `grow`: allocates and touches memory at the given rate and never frees it, until the kernel's OOM killer
  ends the container at its memory limit (the kubelet then restarts it: a leak that crash-loops).

The flag is a file, not an argument, so a workload's behaviour changes without a rollout (its pods read a
hostPath directory the test writes), and a pod a rollout replaces behaves like the one before it. Only the
standard library: the image is the sandbox's Debian python3 base plus this file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import time
from pathlib import Path

MIB = 2**20
POLL_S = 0.5


def _burn() -> None:
    while True:
        pass


def _mode(flag_file: Path) -> str:
    try:
        return flag_file.read_text().strip() or "idle"
    except OSError:
        return "idle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flag-file", type=Path, default=Path("/flags/mode"))
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--grow-mib-per-s", type=float, default=16.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    burners: list[multiprocessing.Process] = []
    held: list[bytes] = []
    mode = ""
    while True:
        wanted = _mode(args.flag_file)
        if wanted != mode:
            print(f"mode {wanted}", flush=True)
            mode = wanted
        if mode == "burn" and not burners:
            burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
            for burner in burners:
                burner.start()
        elif mode != "burn" and burners:
            for burner in burners:
                burner.terminate()
            burners = []
        if mode == "grow":
            # Filled, not just reserved: a page counts towards the working set (and the limit) once written.
            held.append(b"\x01" * int(args.grow_mib_per_s * MIB * POLL_S))
            print(f"holding {len(held) * args.grow_mib_per_s * POLL_S:.0f} MiB", flush=True)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
