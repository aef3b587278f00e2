"""Diagnosis: the evidence pack, the runbook-driven rule diagnoser, the LLM proposer and its reviewer.

Pure decision code; the only I/O is the LLM call, through a client handed in (client.py builds it)."""

from sequestra.diagnosis.diagnoser import Diagnoser, material_fingerprint
from sequestra.diagnosis.evidence import build_evidence, redact, redact_text
from sequestra.diagnosis.llm import LlmSettings
from sequestra.diagnosis.runbooks import Runbook, RunbookError, default_runbooks_dir, load_runbooks
from sequestra.model.diagnosis import Diagnosis, Review
from sequestra.model.evidence import Evidence, EvidenceItem, SignalSummary

__all__ = [
    "Diagnoser", "Diagnosis", "Evidence", "EvidenceItem", "LlmSettings", "Review", "Runbook", "RunbookError",
    "SignalSummary", "build_evidence", "default_runbooks_dir", "load_runbooks", "material_fingerprint", "redact",
    "redact_text",
]
