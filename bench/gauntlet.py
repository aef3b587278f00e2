"""The incident gauntlet as a benchmark: every scenario in gauntlet/scenarios/ against the real operator
(`sequestra gauntlet`), about 6 minutes. Writes docs/GAUNTLET.md (and .json). Goals: every scenario handled
right (target, rung, effect verified, pages, exact release) and a median time to hold within two intervals
plus 5 s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT = Path(__file__).resolve().parents[1] / "docs" / "GAUNTLET.md"


@dataclass
class GauntletResult:
    document: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def met_goals(self) -> bool:
        facts = self.document["summary"]
        median_s = facts["medianTimeToHoldS"]
        return facts["ok"] == facts["scenarios"] and median_s is not None and median_s <= facts["goalTimeToHoldS"]

    def lines(self) -> list[str]:
        facts = self.document["summary"]
        misses = [row["scenario"] for row in self.document["scenarios"] if not row["ok"]]
        return [f"gauntlet ({facts['scenarios']} scenarios, {self.seconds / 60:.1f} min): {facts['ok']} right"
                + (f" (missed: {', '.join(misses)})" if misses else "")
                + f"; {facts['incidentsHeldRight']}/{facts['incidents']} incidents held right, "
                f"{facts['holdsOnLookAlikes']} holds where none belong; median time to hold "
                f"{facts['medianTimeToHoldS']} s (goal {facts['goalTimeToHoldS']} s = "
                f"{(facts['medianTimeToHoldS'] or 0) / facts['goalTimeToHoldS']:.2f}x); report "
                f"{REPORT.relative_to(REPORT.parents[1])}"]


def run() -> GauntletResult:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "sequestra.cli", "gauntlet", "--report", str(REPORT)], check=False)
    return GauntletResult(json.loads(REPORT.with_suffix(".json").read_text()), time.monotonic() - started)
