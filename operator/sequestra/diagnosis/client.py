"""The one place an OpenAI client is constructed from settings (the decision code only receives it)."""

from __future__ import annotations

import openai

from sequestra.diagnosis.llm import LlmSettings


def make_client(settings: LlmSettings) -> openai.OpenAI:
    # Retries are ours (llm.complete), so they are logged and counted in the diagnosis record.
    return openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or "unset",
                         timeout=settings.timeout_s, max_retries=0)
