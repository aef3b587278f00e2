"""Pure decisions: what Sequestra may do. Every guardrail lives here."""
