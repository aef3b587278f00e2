"""Typed values shared by every layer: custom resource specs and statuses, actions, prior state.

No I/O and no kopf here; everything else imports this, and this imports nothing of ours.
"""
