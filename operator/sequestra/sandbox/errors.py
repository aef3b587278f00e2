"""Sandbox failures, each with one line saying what is wrong and how to fix it."""


class SandboxError(RuntimeError):
    """A sandbox step failed; the message names the component and the fix."""
