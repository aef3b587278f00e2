"""The sandbox's real language model qualified on the whole eval suite (`sequestra eval --qualify`).

Writes the report to docs/QUALIFICATION.md (and .json). The small model is not expected to qualify; the
goal measured here is the pipeline's: however wrong the model, no action outside policy, no foreign target
and no wrong proposal turned into a false sequester. About 57 scenarios x (proposer + reviewer): 15-40 min
on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequestra.sandbox import endpoints

REPORT = Path(__file__).resolve().parents[1] / "docs" / "QUALIFICATION.md"


@dataclass
class QualificationResult:
    document: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def met_goals(self) -> bool:
        pipeline, depth = self.document["summary"]["pipeline"], self.document["defenceInDepth"]
        return not pipeline["policyViolations"] and not pipeline["wrongTargets"] and not depth["harmfulThrough"]

    def lines(self) -> list[str]:
        summary, depth = self.document["summary"], self.document["defenceInDepth"]
        model, pipeline, rules = summary["model"], summary["pipeline"], summary["rules"]
        return [
            f"model qualification ({self.document['about']['model']}, {self.document['about']['scenarios']} "
            f"scenarios, {self.seconds / 60:.0f} min): verdict {self.document['verdict']}",
            f"  action accuracy: rules {rules['actionAccuracy']:.1%}, model alone {model['actionAccuracy']:.1%}, "
            f"pipeline {pipeline['actionAccuracy']:.1%}",
            f"  wrong proposals {depth['wrongProposals']}: gate {depth['caughtByGate']}, checks "
            f"{depth['caughtByChecks']}, reviewer {depth['caughtByReviewer']}, none {depth['caughtByNone']}; "
            f"harmful through {len(depth['harmfulThrough'])} (goal 0)",
            f"  pipeline policy violations {len(pipeline['policyViolations'])} (goal 0), wrong targets "
            f"{pipeline['wrongTargets']} (goal 0); latency p50/p95 {model['latencyP50Ms'] or 0:.0f}/"
            f"{model['latencyP95Ms'] or 0:.0f} ms; report {REPORT.relative_to(REPORT.parents[1])}",
        ]


def run() -> QualificationResult:
    started = time.monotonic()
    sequestra = Path(sys.executable).with_name("sequestra")
    completed = subprocess.run(
        [str(sequestra), "eval", "--qualify", "--base-url", endpoints.model_server_url(), "--model",
         endpoints.SANDBOX_MODEL, "--timeout", "300", "--report", str(REPORT)],
        stdout=subprocess.DEVNULL, check=False)  # its progress goes to stderr, on the terminal
    if completed.returncode not in (0, 1):  # 1: not qualified, which the report says
        raise RuntimeError(f"sequestra eval --qualify failed (exit {completed.returncode})")
    return QualificationResult(json.loads(REPORT.with_suffix(".json").read_text()), time.monotonic() - started)
