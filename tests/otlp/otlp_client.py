"""What send_logs.py and send_metrics.py share: the command line, the two
OTLP/HTTP exporters of the OpenTelemetry Python SDK (protobuf, and the JSON
one), both with gzip and the API key in their headers, and an honest exit
status.

NOTE: the SDK's force_flush() returns True even when the export failed
(BatchLogRecordProcessor and PeriodicExportingMetricReader ignore the
exporter's result; the exporter only logs an error), so the scripts wrap
their exporter to remember every result.
"""

import argparse
import importlib
import json
import logging
import sys

SERVICE_HOST = "edge-otel-1"
# The extra resource attribute; the server copies it into every entry.
RESOURCE_EXTRA = {"deployment.environment": "otlp-sdk-test"}

# (module, class) of each exporter.
EXPORTERS = {
    ("proto", "logs"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
    ("proto", "metrics"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("json", "logs"): ("opentelemetry.exporter.otlp.json.http._log_exporter", "OTLPLogExporter"),
    ("json", "metrics"): (
        "opentelemetry.exporter.otlp.json.http.metric_exporter",
        "OTLPMetricExporter",
    ),
}


def parse_args(signal):
    p = argparse.ArgumentParser(description=f"Send OTLP {signal} with the OpenTelemetry SDK")
    p.add_argument("endpoint", help=f"the signal's URL, e.g. http://127.0.0.1:8000/v1/{signal}")
    p.add_argument("api_key")
    p.add_argument("encoding", choices=["proto", "json"])
    p.add_argument("tag", help="run tag, sent as the attribute `run` of every record")
    p.add_argument("--rounds", type=int, default=1, help="record and force_flush N times")
    p.add_argument("--timeout", type=float, default=20.0, help="export timeout, retries included")
    args = p.parse_args()
    args.signal = signal
    return args


def resource(service):
    """`service.name`, `host.name` and one more attribute; Resource.create
    adds the SDK's own (telemetry.sdk.*, service.instance.id)."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": service, "host.name": SERVICE_HOST, **RESOURCE_EXTRA})


def exporter(args):
    """The SDK's exporter for the signal and encoding, gzip on, the key in
    `X-API-Key`."""
    if args.encoding == "proto":
        from opentelemetry.exporter.otlp.proto.http import Compression

        gzip = Compression.Gzip
    else:
        # The JSON exporter (a beta package) has no Compression of its own:
        # it takes the shared HTTP client's enum.
        from opentelemetry.exporter.otlp.common.http import Compression

        gzip = Compression.GZIP
    module, name = EXPORTERS[(args.encoding, args.signal)]
    return getattr(importlib.import_module(module), name)(
        endpoint=args.endpoint,
        headers={"X-API-Key": args.api_key},
        compression=gzip,
        timeout=args.timeout,
    )


class RetryWarnings(logging.Handler):
    """Counts the SDK's "Transient error ... retrying in Ns" warnings: the
    client's own word that it retried (after a 429, say). The SDK's
    DuplicateFilter hides a warning repeated within 20 s, so the count is a
    lower bound."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        if "Transient error" in str(record.msg):
            self.count += 1


def watch_retries():
    """Counts retries, and shows the SDK's warnings and errors (the status
    of a failed export) on stderr, for the test's failure message."""
    logging.basicConfig(level=logging.WARNING, format="python: %(levelname)s %(name)s: %(message)s")
    handler = RetryWarnings()
    logging.getLogger("opentelemetry").addHandler(handler)
    return handler


class Results:
    """Every export's outcome, and the exit status they make."""

    def __init__(self):
        self.exports = 0
        self.failures = 0

    def record(self, ok):
        self.exports += 1
        if not ok:
            self.failures += 1

    def finish(self, retries, **extra):
        """Prints one JSON line for the test; exits 1 if any export failed
        (or none happened)."""
        summary = {
            "exports": self.exports,
            "failures": self.failures,
            "retry_warnings": retries.count,
            **extra,
        }
        print(json.dumps(summary), flush=True)
        if self.failures or not self.exports:
            print(f"export failed: {summary}", file=sys.stderr, flush=True)
            sys.exit(1)
        sys.exit(0)
