"""The local sandbox: real Kubernetes, Kafka, Prometheus and Alertmanager as plain local processes.

Used by `make demo`, the integration tests and the benchmarks. Nothing here is imported by the
operator's decision core.
"""
