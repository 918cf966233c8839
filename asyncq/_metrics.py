"""``/metrics``: the OpenTelemetry metrics in the Prometheus text format.

``asyncq run --health-port P --metrics`` serves ``GET /metrics`` beside the
probes. The metrics are the OpenTelemetry instruments asyncq records
(``docs/observability.md``), read by the OpenTelemetry Prometheus exporter
(``pip install 'asyncq[prometheus]'``), which renders them through
``prometheus_client``: nothing here writes the exposition format by hand.

When no SDK meter provider is set, ``install`` sets one with a
``PrometheusMetricReader``. When the process already set one (to export
elsewhere too), it is kept, and ``/metrics`` serves whatever
``prometheus_client``'s default registry holds: give that provider a
``PrometheusMetricReader`` for asyncq's metrics to show.
"""

from __future__ import annotations

import logging
from typing import Any

from ._telemetry import recheck_providers
from .exceptions import ConfigurationError

__all__ = ["Exposition", "install"]

log = logging.getLogger("asyncq.metrics")


class Exposition:
    """Renders the registry: ``render()`` returns the body and its content type."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every collector in the registry."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self._registry), CONTENT_TYPE_LATEST


def install() -> Exposition:
    """Make the global OpenTelemetry metrics readable at ``/metrics`` (see the module docs).

    Raises:
        ConfigurationError: the exporter is not installed.
    """
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import REGISTRY
    except ImportError as exc:
        msg = (
            "--metrics needs the OpenTelemetry SDK and its Prometheus exporter: "
            f"pip install 'asyncq[prometheus]' ({exc})"
        )
        raise ConfigurationError(msg) from exc
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        log.info(
            "a meter provider is already set: /metrics serves prometheus_client's registry; "
            "give that provider a PrometheusMetricReader for asyncq's metrics to show"
        )
    else:
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        recheck_providers()
    return Exposition(REGISTRY)
