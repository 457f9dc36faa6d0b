"""Sends log records to an OTLP/HTTP endpoint with the OpenTelemetry Python
SDK, as an instrumented application does: a LoggerProvider with a Resource,
a BatchLogRecordProcessor, the SDK's logger API, gzip, `X-API-Key`.

    send_logs.py ENDPOINT API_KEY proto|json TAG [--rounds N]

Each round emits the seven records of RECORDS (tests/otlp_sdk.rs expects
the same table in the sink) and force_flush()es: one export request a
round. Prints one JSON summary line; exits 1 if any export failed.
"""

import calendar
import time

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import otlp_client

SERVICE = "otel-py-logs"
# 2026-11-27T10:00:00Z; record `seq` is stamped T0 + seq s + 250 ms.
T0_NS = calendar.timegm((2026, 11, 27, 10, 0, 0)) * 1_000_000_000
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ACTIVE = 0x00F067AA0BA902B7
SPAN_EXPLICIT = 0xB7AD6B7169203331
DICT_BODY = {"event": "login", "user": {"id": 42, "admin": False}, "tries": [1, 2]}

# (seq, severity_number, severity_text, body, span). Span: "active" = emitted
# inside an active span; "explicit" = passed as `context=`; None = no span
# (no trace_id/span_id on the wire).
RECORDS = [
    (0, SeverityNumber.TRACE, "TRACE", "text", "active"),
    (1, SeverityNumber.DEBUG4, "DEBUG4", "text", "active"),
    # The number wins over a text that disagrees.
    (2, SeverityNumber.INFO2, "WARN", "text", "active"),
    (3, SeverityNumber.WARN4, "WARN4", "text", "explicit"),
    (4, SeverityNumber.ERROR, "ERROR", "text", "explicit"),
    (5, SeverityNumber.FATAL4, "FATAL4", "dict", "explicit"),
    # No number: the level comes from the text. No timestamp: the SDK's
    # observed time is all there is.
    (6, None, "Error", "text", None),
]


class Recording(LogRecordExporter):
    """The real exporter, remembering each export's result."""

    def __init__(self, inner, results):
        self.inner = inner
        self.results = results

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.record(result == LogRecordExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis=30_000):
        return self.inner.force_flush(timeout_millis)

    def shutdown(self):
        self.inner.shutdown()


def in_span(span_id):
    ctx = SpanContext(TRACE_ID, span_id, is_remote=False, trace_flags=TraceFlags(1))
    return NonRecordingSpan(ctx)


def emit_round(logger, tag, rnd):
    explicit = trace.set_span_in_context(in_span(SPAN_EXPLICIT))
    no_span = trace.set_span_in_context(trace.INVALID_SPAN)
    with trace.use_span(in_span(SPAN_ACTIVE), end_on_exit=False):
        for seq, number, text, body, span in RECORDS:
            attributes = {
                "run": tag,
                "seq": seq,
                "round": rnd,
                "ok": True,
                "ratio": 0.25,
                "tags": ["a", "b"],
            }
            if seq == 3:
                # The key of a resource attribute: the record's value wins.
                attributes["deployment.environment"] = "record-wins"
            record = {
                "severity_text": text,
                "body": DICT_BODY if body == "dict" else f"{tag} r{rnd} record {seq}",
                "attributes": attributes,
            }
            if number is not None:
                record["severity_number"] = number
            if seq != 6:
                record["timestamp"] = T0_NS + seq * 1_000_000_000 + 250_000_000
            if span == "explicit":
                record["context"] = explicit
            elif span is None:
                record["context"] = no_span
            logger.emit(**record)


def main():
    args = otlp_client.parse_args("logs")
    retries = otlp_client.watch_retries()
    results = otlp_client.Results()
    provider = LoggerProvider(resource=otlp_client.resource(SERVICE))
    # A ten-minute schedule: only force_flush() exports, one request a round.
    exporter = Recording(otlp_client.exporter(args), results)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, schedule_delay_millis=600_000)
    )
    scope = {"scope.kind": "test-scope"}
    logger = provider.get_logger("edge-ingester.otlp-test", "0.9", attributes=scope)
    started = time.monotonic()
    for rnd in range(args.rounds):
        emit_round(logger, args.tag, rnd)
        provider.force_flush()
    seconds = round(time.monotonic() - started, 3)
    provider.shutdown()
    results.finish(retries, records=len(RECORDS) * args.rounds, seconds=seconds)


if __name__ == "__main__":
    main()
