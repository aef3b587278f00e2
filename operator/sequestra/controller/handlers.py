"""Every kopf handler of the operator: importing this module registers them all (`kopf run -m`)."""

from sequestra.controller import loop, policies, sequestrations

__all__ = ["loop", "policies", "sequestrations"]
