"""Sends one of each metric kind the OpenTelemetry Python SDK has to an
OTLP/HTTP endpoint: a MeterProvider with a Resource, a
PeriodicExportingMetricReader that exports only when force_flush()ed,
gzip, `X-API-Key`.

    send_metrics.py ENDPOINT API_KEY proto|json TAG [--rounds N]

Values are fixed so tests/otlp_sdk.rs can assert exact numbers:
- counter `edge.test.jobs` (monotonic sum → counter): queue=a 3+4 = 7,
  queue=b 5
- up-down counter `edge.test.connections` (non-monotonic sum → gauge):
  10-3 = 7
- gauge `edge.test.temperature` (synchronous create_gauge → gauge): 21.5
- observable gauge `edge.test.queue_depth` (callback → gauge): 42
- histogram `edge.test.latency`, bounds [5, 10] (a View), records 1, 7, 30:
  _count 3, _sum 38, _bucket le=5 → 1, le=10 → 2, le=+Inf → 3
- exponential histogram `edge.test.size` (a View with
  ExponentialBucketHistogramAggregation), records 2, 4, 8: _count 3, _sum 14
The Python SDK has no summary instrument (summaries only come from bridges
such as Prometheus), so the summary mapping is left to the unit tests.

Temporality is the SDK default (cumulative): with --rounds N the values are
recorded once and exported N times. Prints one JSON summary line; exits 1
if any export failed.
"""

import math
import time

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)

import otlp_client

SERVICE = "otel-py-metrics"


class Recording(MetricExporter):
    """The real exporter, remembering each export's result. It keeps the
    inner exporter's temporality and aggregation preferences."""

    def __init__(self, inner, results):
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.results = results

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.record(result == MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis=10_000):
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def record(meter, tag):
    base = {"run": tag}
    jobs = meter.create_counter("edge.test.jobs", unit="{job}", description="jobs done")
    jobs.add(3, {**base, "queue": "a"})
    jobs.add(4, {**base, "queue": "a"})
    jobs.add(5, {**base, "queue": "b"})

    conns = meter.create_up_down_counter("edge.test.connections", unit="{connection}")
    conns.add(10, base)
    conns.add(-3, base)

    meter.create_gauge("edge.test.temperature", unit="Cel").set(21.5, {**base, "room": "lab"})

    meter.create_observable_gauge(
        "edge.test.queue_depth",
        callbacks=[lambda _options: [Observation(42, base)]],
        unit="{item}",
    )

    latency = meter.create_histogram("edge.test.latency", unit="ms")
    for v in (1, 7, 30):
        latency.record(v, base)

    size = meter.create_histogram("edge.test.size", unit="By")
    for v in (2, 4, 8):
        size.record(v, base)


def main():
    args = otlp_client.parse_args("metrics")
    retries = otlp_client.watch_retries()
    results = otlp_client.Results()
    # NOTE: with any finite interval the reader's thread exports once more
    # at shutdown(), cumulative: every point reached the sink twice. An
    # infinite interval has no thread: only force_flush() exports.
    reader = PeriodicExportingMetricReader(
        Recording(otlp_client.exporter(args), results), export_interval_millis=math.inf
    )
    explicit = ExplicitBucketHistogramAggregation(boundaries=[5, 10])
    views = [
        View(instrument_name="edge.test.latency", aggregation=explicit),
        View(instrument_name="edge.test.size", aggregation=ExponentialBucketHistogramAggregation()),
    ]
    provider = MeterProvider(
        resource=otlp_client.resource(SERVICE), metric_readers=[reader], views=views
    )
    scope = {"scope.kind": "test-scope"}
    record(provider.get_meter("edge-ingester.otlp-test", "0.9", attributes=scope), args.tag)
    started = time.monotonic()
    for _ in range(args.rounds):
        provider.force_flush()
    seconds = round(time.monotonic() - started, 3)
    provider.shutdown()
    results.finish(retries, seconds=seconds)


if __name__ == "__main__":
    main()
