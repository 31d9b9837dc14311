"""Access to the Kubernetes API, imported only when a Kubernetes feature is switched on.

In-cluster configuration first, then a kubeconfig (`--kubeconfig`, else the default
locations); the choice is logged. Importing this module imports `kubernetes` (~40 MiB).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from probe import logs

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster() -> bool:
    """Running in a pod with Kubernetes' service environment."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def own_namespace() -> str:
    """The pod's namespace: POD_NAMESPACE, the service-account file, else "default"."""
    namespace = os.environ.get("POD_NAMESPACE")
    if namespace:
        return namespace
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


class KubeConfigError(Exception):
    """No usable Kubernetes configuration; the message says which and why."""


def api_client(kubeconfig: str | None) -> Any:
    """An ApiClient of our own (never the library's global configuration).

    Raises KubeConfigError when neither in-cluster config nor the kubeconfig works.
    """
    if not kubeconfig and in_cluster():
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            logger.warning(
                "in-cluster Kubernetes config unusable, trying kubeconfig",
                extra=logs.fields(error=str(exc)),
            )
        else:
            logger.info(
                "Kubernetes API: in-cluster config", extra=logs.fields(server=configuration.host)
            )
            return client.ApiClient(configuration)
    path = kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")
    try:
        api = config.new_client_from_config(config_file=kubeconfig or None)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise KubeConfigError(
            f"not in a cluster and no usable kubeconfig ({path}): {exc}; "
            "set --kubeconfig, or turn discovery and Events off"
        ) from None
    logger.info(
        "Kubernetes API: kubeconfig",
        extra=logs.fields(
            path=kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config"),
            server=api.configuration.host,
        ),
    )
    return api


class Backoff:
    """Exponential backoff with full jitter: 0..min(cap, base·2^n) seconds."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.base, self.cap, self.failures = base, cap, 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._rng.uniform(0, min(self.cap, self.base * 2**self.failures))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
