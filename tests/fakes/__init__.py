"""Fakes for what cannot run here. Only the LLM endpoint qualifies; each speaks the real protocol."""
