"""milvus-probe: fresh-connection probing of Milvus for Kubernetes and Prometheus."""

__version__ = "0.1.0"
