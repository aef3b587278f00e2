"""Sequestra: contain misbehaving Kubernetes workloads autonomously and safely."""

__version__ = "0.1.0"
