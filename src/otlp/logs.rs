//! OTLP log records → `LogRecord` entries (SPEC §8).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord as OtlpRecord;

use super::value::{self, Attributes};
use super::{base_weight, resource_base, scope_base, Context, Mapped, Rejects, Room};
use crate::model::{AttrValue, Batch, Entries, Level, LogRecord, MAX_MESSAGE_BYTES};

/// Maps every record it can; each one it cannot is counted with its reason.
/// Takes the request so that bodies and record attributes move into the
/// entries instead of being copied.
pub fn map(req: ExportLogsServiceRequest, ctx: &Context) -> Mapped {
    let mut out = Vec::new();
    let mut rejects = Rejects::default();
    let mut room = Room::new(ctx);
    for (ri, rl) in req.resource_logs.into_iter().enumerate() {
        let base = resource_base(rl.resource.as_ref());
        for (si, sl) in rl.scope_logs.into_iter().enumerate() {
            let at = |li: usize| format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]");
            let n = sl.log_records.len();
            if n == 0 {
                continue;
            }
            let scoped = scope_base(&mut room, &base, sl.scope.as_ref());
            let ((service, host), attrs) = match scoped {
                Ok(s) => s,
                Err(why) => {
                    rejects.add(n as i64, || format!("{}: {why}", at(0)));
                    continue;
                }
            };
            out.reserve(n.min(room.entries));
            let fixed = base_weight(&service, &host, &attrs);
            for (li, record) in sl.log_records.into_iter().enumerate() {
                // What every entry copies is checked before it is copied, and
                // paid for whether the entry is kept or not: the copying a
                // request can cause is bounded by the room.
                let mapped = precheck(&record)
                    .and_then(|()| room.check(1, fixed))
                    .and_then(|()| {
                        let e = entry(record, &service, &host, &attrs, ctx);
                        room.take(0, fixed);
                        e
                    })
                    .and_then(|e| {
                        let bytes = weight(&e).saturating_sub(fixed);
                        room.check(1, bytes).map(|()| (e, bytes))
                    });
                match mapped {
                    Ok((e, bytes)) => {
                        room.take(1, bytes);
                        out.push(e);
                    }
                    Err(why) => rejects.add(1, || format!("{}: {why}", at(li))),
                }
            }
        }
    }
    Mapped {
        batch: (!out.is_empty()).then(|| Batch {
            received_at: ctx.received_at.clone(),
            agent_version: ctx.agent_version.clone(),
            entries: Entries::Logs(out),
        }),
        rejected: rejects.count,
        error_message: rejects.message("log record"),
    }
}

fn entry(
    r: OtlpRecord,
    service: &str,
    host: &str,
    base: &Attributes,
    ctx: &Context,
) -> Result<LogRecord, String> {
    // An absent body is an empty message; any body that is set, even to
    // an empty value, is rendered.
    let message = r.body.map_or_else(String::new, value::text_owned);
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "body is {} bytes; at most {MAX_MESSAGE_BYTES} are allowed",
            message.len()
        ));
    }
    let mut attrs = base.clone();
    attrs.0.reserve(r.attributes.len() + 2);
    attrs.merge_owned(r.attributes);
    if let Some(id) = value::id_hex(&r.trace_id) {
        attrs.set("trace_id".into(), AttrValue::Str(id));
    }
    if let Some(id) = value::id_hex(&r.span_id) {
        attrs.set("span_id".into(), AttrValue::Str(id));
    }
    let timestamp = value::time_of(r.time_unix_nano)
        .or_else(|| value::time_of(r.observed_time_unix_nano))
        .unwrap_or_else(|| ctx.received_at.clone());
    Ok(LogRecord {
        timestamp,
        level: level(r.severity_number, &r.severity_text),
        message,
        service: service.to_string(),
        host: host.to_string(),
        attributes: attrs.0,
    })
}

/// The bytes an entry counts against `Context::max_bytes`.
fn weight(e: &LogRecord) -> usize {
    super::ENTRY_OVERHEAD
        + e.message.len()
        + e.timestamp.len()
        + e.service.len()
        + e.host.len()
        + value::weight_of(&e.attributes)
}

/// What can be judged of a record before anything is copied for it.
fn precheck(r: &OtlpRecord) -> Result<(), String> {
    r.attributes
        .iter()
        .try_for_each(|kv| value::check_key(&kv.key))
}

/// `severity_number` by its bands, else `severity_text` as on `/logs`,
/// else INFO.
fn level(number: i32, text: &str) -> Level {
    match number {
        1..=4 => Level::Trace,
        5..=8 => Level::Debug,
        9..=12 => Level::Info,
        13..=16 => Level::Warning,
        17..=20 => Level::Error,
        21..=24 => Level::Critical,
        _ => Level::parse(text.trim()).unwrap_or(Level::Info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn ctx() -> Context {
        Context {
            received_at: "2026-11-29T00:00:00Z".into(),
            agent_version: Some("test-agent".into()),
            max_entries: 100,
            max_bytes: 1 << 20,
        }
    }

    fn request(
        resource: Vec<KeyValue>,
        scope: Vec<KeyValue>,
        records: Vec<OtlpRecord>,
    ) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        attributes: scope,
                        ..Default::default()
                    }),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn one(record: OtlpRecord) -> LogRecord {
        let m = map(request(vec![], vec![], vec![record]), &ctx());
        assert_eq!(m.rejected, 0, "{}", m.error_message);
        let Entries::Logs(mut v) = m.batch.unwrap().entries else {
            panic!()
        };
        v.remove(0)
    }

    #[test]
    fn timestamp_is_time_else_observed_time_else_receive_time() {
        let t = |time, observed| {
            one(OtlpRecord {
                time_unix_nano: time,
                observed_time_unix_nano: observed,
                ..Default::default()
            })
            .timestamp
        };
        assert_eq!(t(1_700_000_000_000_000_000, 5), "2023-11-14T22:13:20Z");
        assert_eq!(t(0, 1_700_000_000_500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(t(0, 0), "2026-11-29T00:00:00Z");
    }

    #[test]
    fn level_comes_from_the_severity_number_bands_then_the_text_then_info() {
        let l = |n, t: &str| {
            one(OtlpRecord {
                severity_number: n,
                severity_text: t.into(),
                ..Default::default()
            })
            .level
        };
        let bands = [
            (1, Level::Trace),
            (4, Level::Trace),
            (5, Level::Debug),
            (8, Level::Debug),
            (9, Level::Info),
            (12, Level::Info),
            (13, Level::Warning),
            (16, Level::Warning),
            (17, Level::Error),
            (20, Level::Error),
            (21, Level::Critical),
            (24, Level::Critical),
        ];
        for (n, want) in bands {
            assert_eq!(l(n, "DEBUG"), want, "severity_number {n}");
        }
        assert_eq!(l(0, "warn"), Level::Warning);
        assert_eq!(l(0, "Fatal"), Level::Critical);
        assert_eq!(l(99, "error"), Level::Error);
        assert_eq!(l(0, "chatty"), Level::Info);
        assert_eq!(l(0, ""), Level::Info);
    }

    #[test]
    fn message_is_a_string_body_as_is_and_any_other_body_as_compact_json() {
        let m = |body: Option<Value>| {
            one(OtlpRecord {
                body: body.map(|v| AnyValue { value: Some(v) }),
                ..Default::default()
            })
            .message
        };
        assert_eq!(m(Some(s("disk full"))), "disk full");
        assert_eq!(m(Some(Value::IntValue(42))), "42");
        assert_eq!(m(Some(Value::BoolValue(false))), "false");
        assert_eq!(
            m(Some(Value::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![kv("event", s("login")), kv("ok", Value::BoolValue(true))],
                }
            ))),
            r#"{"event":"login","ok":true}"#
        );
        assert_eq!(m(None), "");
    }

    #[test]
    fn service_and_host_come_from_the_resource_with_defaults() {
        let m = map(
            request(
                vec![
                    kv("service.name", s("checkout")),
                    kv("host.name", s("edge-7")),
                ],
                vec![],
                vec![OtlpRecord::default()],
            ),
            &ctx(),
        );
        let Entries::Logs(v) = m.batch.unwrap().entries else {
            panic!()
        };
        assert_eq!(
            (v[0].service.as_str(), v[0].host.as_str()),
            ("checkout", "edge-7")
        );
        let e = one(OtlpRecord::default());
        assert_eq!(
            (e.service.as_str(), e.host.as_str()),
            ("unknown_service", "unknown")
        );
    }

    #[test]
    fn attributes_merge_resource_scope_and_record_with_the_record_winning_plus_ids() {
        let m = map(
            request(
                vec![
                    kv("service.name", s("svc")),
                    kv("k", s("resource")),
                    kv("r", s("r")),
                ],
                vec![kv("k", s("scope")), kv("sc", Value::IntValue(2))],
                vec![OtlpRecord {
                    attributes: vec![kv("k", s("record")), kv("n", Value::DoubleValue(0.5))],
                    trace_id: vec![0xab; 16],
                    span_id: vec![0x01; 8],
                    ..Default::default()
                }],
            ),
            &ctx(),
        );
        let Entries::Logs(v) = m.batch.unwrap().entries else {
            panic!()
        };
        let get = |k: &str| {
            v[0].attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("service.name"), Some(AttrValue::Str("svc".into())));
        assert_eq!(get("k"), Some(AttrValue::Str("record".into())));
        assert_eq!(get("r"), Some(AttrValue::Str("r".into())));
        assert_eq!(get("sc"), Some(AttrValue::Int(2)));
        assert_eq!(get("n"), Some(AttrValue::Float(0.5)));
        assert_eq!(get("trace_id"), Some(AttrValue::Str("ab".repeat(16))));
        assert_eq!(get("span_id"), Some(AttrValue::Str("01".repeat(8))));
        assert_eq!(v[0].attributes.iter().filter(|(k, _)| k == "k").count(), 1);
        let unset = one(OtlpRecord {
            trace_id: vec![0; 16],
            ..Default::default()
        });
        assert!(unset.attributes.iter().all(|(k, _)| k != "trace_id"));
    }

    #[test]
    fn records_that_cannot_be_mapped_are_rejected_alone_and_counted() {
        let big = OtlpRecord {
            body: Some(AnyValue {
                value: Some(s(&"x".repeat(MAX_MESSAGE_BYTES + 1))),
            }),
            ..Default::default()
        };
        let bad_key = OtlpRecord {
            attributes: vec![kv("", s("v"))],
            ..Default::default()
        };
        let ok = OtlpRecord {
            body: Some(AnyValue {
                value: Some(s("fine")),
            }),
            ..Default::default()
        };
        let m = map(request(vec![], vec![], vec![big, ok, bad_key]), &ctx());
        assert_eq!(m.rejected, 2);
        assert!(
            m.error_message
                .starts_with("2 log records rejected; the first: resourceLogs[0].scopeLogs[0].logRecords[0]: body is 65537 bytes"),
            "{}",
            m.error_message
        );
        assert_eq!(m.batch.unwrap().len(), 1);
        let long_service = map(
            request(
                vec![kv("service.name", s(&"s".repeat(300)))],
                vec![],
                vec![OtlpRecord::default(); 3],
            ),
            &ctx(),
        );
        assert_eq!(long_service.rejected, 3);
        assert!(long_service.batch.is_none());
    }

    #[test]
    fn entries_beyond_the_limit_are_rejected_not_stored() {
        let mut c = ctx();
        c.max_entries = 2;
        let m = map(request(vec![], vec![], vec![OtlpRecord::default(); 5]), &c);
        assert_eq!(m.batch.unwrap().len(), 2);
        assert_eq!(m.rejected, 3);
        assert!(m.error_message.contains("server.max_batch_entries (2)"));
    }

    #[test]
    fn resource_attributes_copied_into_each_entry_are_bounded_by_max_bytes() {
        let mut c = ctx();
        c.max_bytes = 1_000_000;
        c.max_entries = 10_000;
        let blob = kv("blob", s(&"x".repeat(100_000)));
        let m = map(
            request(vec![blob], vec![], vec![OtlpRecord::default(); 1000]),
            &c,
        );
        // 1 MB holds 9 copies of 100 kB: the scope's merge and 8 entries.
        assert_eq!(m.batch.unwrap().len(), 8);
        assert_eq!(m.rejected, 992);
        assert!(
            m.error_message.contains("server.max_body_bytes (1000000)"),
            "{}",
            m.error_message
        );
    }

    #[test]
    fn an_empty_request_maps_to_nothing_and_rejects_nothing() {
        let m = map(ExportLogsServiceRequest::default(), &ctx());
        assert!(m.batch.is_none());
        assert_eq!((m.rejected, m.error_message.as_str()), (0, ""));
    }
}
