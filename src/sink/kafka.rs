//! The Kafka sink: an idempotent rdkafka producer, one message per entry.
//!
//! NOTE: `message.timeout.ms = 0` (no timeout) by default. librdkafka's own
//! docs (INTRODUCTION.md, "Message timeout considerations") show that when
//! messages time out during an outage, later messages of the same partition
//! can still be written (1, 4, 5 with 2, 3 lost), so an application retry of
//! 2, 3 would reorder a key. Without a timeout, librdkafka keeps retrying in
//! produce order and the idempotent producer makes those retries
//! duplicate-free; the forwarder sees an outage as a delivery that stalls
//! (`Sink::stall_after`) and shows it, without cancelling anything.
//!
//! Errors are classified explicitly, per entry: the codes in `PERMANENT` can
//! never succeed for that record, so that entry — and only it — goes to the
//! dead letters once the rest of its batch is confirmed. Every other error is
//! retriable and the batch is submitted again (same `ingest-id`s); the codes
//! in `NEEDS_OPERATOR` concern the destination, not the record, and
//! `last_error` says what to fix.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use super::{message, Confirmed, Delivery, Refusal, Rendered, Sink, SinkError, SubmitFuture};
use crate::config::KafkaConfig;
use crate::model::Kind;
use crate::queue::lock;

/// Errors for which a retry of the same record can never succeed. NOTE:
/// Kafka's `RECORD_LIST_TOO_LARGE` (code 18) is librdkafka's
/// `MessageBatchTooLarge`.
const PERMANENT: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::InvalidMessage,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::MessageBatchTooLarge,
];

/// Errors that no record can get past until an operator changes the cluster
/// or the config, with what to do. NOTE: they are retried, not
/// dead-lettered: a missing topic or ACL would otherwise move the whole
/// backlog of good records to the dead letters within seconds. The batches
/// stay queued, in order, and `last_error` names the fix.
const NEEDS_OPERATOR: [(RDKafkaErrorCode, &str); 7] = [
    (
        RDKafkaErrorCode::TopicAuthorizationFailed,
        "this client may not write to the topic: grant it Write on the topic",
    ),
    (
        RDKafkaErrorCode::ClusterAuthorizationFailed,
        "this client may not produce idempotently: grant it IdempotentWrite on the cluster",
    ),
    (
        RDKafkaErrorCode::UnknownTopicOrPartition,
        "the topic does not exist: create it (kafka.logs_topic / kafka.metrics_topic)",
    ),
    (
        RDKafkaErrorCode::UnknownTopic,
        "the topic does not exist: create it (kafka.logs_topic / kafka.metrics_topic)",
    ),
    (
        RDKafkaErrorCode::InvalidTopic,
        "the topic name is invalid: fix kafka.logs_topic / kafka.metrics_topic",
    ),
    (
        RDKafkaErrorCode::SaslAuthenticationFailed,
        "authentication failed: check the sasl.* settings in [kafka.properties]",
    ),
    (
        RDKafkaErrorCode::Authentication,
        "authentication failed: check the security settings in [kafka.properties]",
    ),
];

/// Batches in flight at once: enough to keep librdkafka's batches full
/// (NOTES: awaiting sends one by one gives 184 msg/s; pipelined, 270k+).
const MAX_IN_FLIGHT_BATCHES: usize = 256;
/// Entries in flight at once; bounds librdkafka's queue and our memory.
/// NOTE: 20,000 drained as fast as 50,000 into tansu (W3) with ~8 MB less
/// RSS. Once batches were rendered from a borrowed decode, 10,000 drained
/// as fast again (medians 299k vs 291k entries/s) with ~8 MB less RSS
/// (57–60 MB vs 63–72 MB).
const MAX_IN_FLIGHT_ENTRIES: usize = 10_000;
/// Pause before retrying a `send` into a full librdkafka queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);
/// How long a new producer's metadata requests may hasten its producer id
/// (`hasten_producer_id`): past librdkafka's own 500 ms retry, with room
/// for a slow first connection (TLS, a distant cluster).
const PID_NUDGE_FOR: Duration = Duration::from_secs(3);
/// How long one of those requests may wait for its answer: the thread
/// lets go of the producer and looks whether it still exists at least this
/// often.
const PID_NUDGE_WAIT: Duration = Duration::from_secs(1);
/// The pause after a request that failed at once (no broker usable yet),
/// so such failures do not spin. A request made while the bootstrap
/// connection is retiring already waits inside librdkafka for a learned
/// broker.
const PID_NUDGE_PAUSE: Duration = Duration::from_millis(10);
/// Kafka's longest topic name. librdkafka refuses names over 512 bytes and
/// rdkafka then panics on its metadata call; a longer name is refused when
/// a message is sent to it anyway.
const MAX_TOPIC_NAME: usize = 249;

/// Producer settings the service needs; `[kafka.properties]` may override
/// any of them except where `KafkaConfig::check_promise` forbids it.
fn defaults(cfg: &KafkaConfig, node_id: &str) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("bootstrap.servers", cfg.brokers.clone()),
        ("client.id", format!("edge-ingester-{node_id}")),
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", cfg.compression.clone()),
        ("linger.ms", "5".into()),
        ("batch.num.messages", "10000".into()),
        // Room for the window plus one batch larger than the whole window
        // (`server.max_batch_entries` has no upper bound): a submit never
        // waits on its own queue while the forwarder's watchdog cannot run.
        ("queue.buffering.max.messages", "100000".into()),
        ("message.timeout.ms", "0".into()),
        // NOTE: the 10 s default delays recovery after an outage by 6–9 s
        // (NOTES.md); 1 s brings the first success within about a second.
        ("reconnect.backoff.ms", "100".into()),
        ("reconnect.backoff.max.ms", "1000".into()),
        // A broker that stops answering (SIGSTOP, a dead link) is detected in
        // 10 s instead of 60 s; requests are then retried, in order.
        ("socket.timeout.ms", "10000".into()),
        ("socket.keepalive.enable", "true".into()),
    ];
    // NOTE: librdkafka compresses at zstd's default level 3, ~12% of the
    // drain's CPU; level 1 measured ~15% more messages/s into tansu for
    // ~8% larger requests. The bytes are still zstd for every consumer.
    // Only when zstd is what runs: `[kafka.properties]` may name another
    // codec, and it is applied last.
    let codec = ["compression.type", "compression.codec"]
        .iter()
        .find_map(|k| cfg.properties.get(*k))
        .unwrap_or(&cfg.compression);
    if codec.trim().eq_ignore_ascii_case("zstd") {
        settings.push(("compression.level", "1".into()));
    }
    settings
}

/// The producer's librdkafka settings: ours (`defaults`), then every
/// `[kafka.properties]` entry over them. The sink and `check-config` both
/// build from here, so what is checked is what runs.
pub fn client_config(cfg: &KafkaConfig, node_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (k, v) in defaults(cfg, node_id) {
        client.set(k, v);
    }
    for (k, v) in &cfg.properties {
        client.set(k, v);
    }
    client
}

/// Asks librdkafka whether it takes the producer settings `[kafka]` makes,
/// by creating a producer that connects to nothing (no `bootstrap.servers`:
/// librdkafka starts no connection without one). librdkafka validates each
/// property name and value itself, and at creation what depends on the
/// host (`ssl.ca.location` readable, SASL mechanism built in). NOTE: before
/// this check a bad property passed validation and failed only when `serve`
/// built its producer (exit 1, after opening the queue).
pub fn check_settings(cfg: &KafkaConfig) -> Result<(), SettingsError> {
    let mut client = client_config(cfg, "check");
    client.remove("bootstrap.servers");
    client
        .create::<rdkafka::producer::BaseProducer>()
        .map(drop)
        .map_err(|e| SettingsError::new(cfg, &e))
}

/// librdkafka refused a producer setting. Retrying cannot help: the config
/// (or a file it names) must change.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.problem)]
pub struct SettingsError {
    /// The config key at fault: `kafka.properties`, `kafka.compression`, …
    pub key: &'static str,
    /// librdkafka's message, led by the property it names; a secret value
    /// it quotes is replaced by `<redacted>`.
    pub problem: String,
}

impl SettingsError {
    fn new(cfg: &KafkaConfig, err: &KafkaError) -> SettingsError {
        match err {
            KafkaError::ClientConfig(_, desc, property, value) => {
                let key = match property.as_str() {
                    p if cfg.properties.contains_key(p) => "kafka.properties",
                    "compression.type" | "compression.codec" => "kafka.compression",
                    "bootstrap.servers" => "kafka.brokers",
                    _ => "kafka.properties",
                };
                let desc = if is_secret(property) && !value.is_empty() {
                    desc.replace(value.as_str(), "<redacted>")
                } else {
                    desc.clone()
                };
                SettingsError {
                    key,
                    problem: format!("`{property}`: {desc}"),
                }
            }
            // Raised at creation; librdkafka's text names the property
            // ("ssl.ca.location failed: …") but never quotes a value.
            KafkaError::ClientCreation(text) => SettingsError {
                key: "kafka.properties",
                problem: text.clone(),
            },
            other => SettingsError {
                key: "kafka.properties",
                problem: other.to_string(),
            },
        }
    }
}

/// librdkafka properties whose value is a secret: `check-config` prints them
/// as `<redacted>`, and no error message quotes them.
pub fn is_secret(property: &str) -> bool {
    let p = property.to_ascii_lowercase();
    ["password", "passphrase", "secret", "private.key"]
        .iter()
        .any(|w| p.contains(w))
        || ["sasl.oauthbearer.config", "sasl.jaas.config", "ssl.key.pem"].contains(&p.as_str())
}

/// Records the client's own errors (broker down, auth failed…) for
/// `last_error`. NOTE: during an outage librdkafka repeats its errors about
/// twice a second with changing counts ("1/1 brokers are down", "0/1 …"), so
/// each error *code* is logged once per failure episode; a delivery success
/// ends the episode.
#[derive(Default)]
pub(crate) struct ErrorTracker {
    state: Arc<Mutex<ClientErrors>>,
}

#[derive(Default)]
struct ClientErrors {
    /// The latest error text, for `last_error`; cleared by a success.
    last: Option<String>,
    /// Codes already logged in this episode.
    logged: Vec<Option<RDKafkaErrorCode>>,
    /// librdkafka raised a fatal error: this producer instance is unusable.
    fatal: bool,
}

impl ClientErrors {
    fn clear(&mut self) {
        self.last = None;
        self.logged.clear();
    }
}

/// What is known of one submitted batch while its messages are in flight.
/// NOTE: a oneshot and a wake-up per message (rdkafka's FutureProducer)
/// cost ~17% of the drain's CPU in context switches; this wakes the
/// forwarder once per batch.
pub(crate) struct BatchTracker {
    remaining: AtomicUsize,
    outcome: Mutex<Outcome>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Outcome {
    /// The first retriable failure: the batch must be sent again.
    retry: Option<SinkError>,
    /// Entries refused for good, by ingest-id.
    refused: Vec<Refusal>,
    /// A permanent refusal that names no entry (never expected: every
    /// message carries its ingest-id): the whole batch is refused.
    whole: Option<SinkError>,
}

/// How one message ended.
enum Settled {
    Delivered,
    Retry(SinkError),
    /// Refused for good; the ingest-id if the message still names it.
    Refused(Option<String>, String),
}

impl BatchTracker {
    fn settle_one(&self, settled: Settled) {
        match settled {
            Settled::Delivered => {}
            Settled::Retry(err) => {
                lock(&self.outcome).retry.get_or_insert(err);
            }
            Settled::Refused(Some(ingest_id), reason) => {
                lock(&self.outcome)
                    .refused
                    .push(Refusal { ingest_id, reason });
            }
            Settled::Refused(None, reason) => {
                lock(&self.outcome)
                    .whole
                    .get_or_insert(SinkError::Permanent(reason));
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(tx) = lock(&self.done).take() {
                let _ = tx.send(());
            }
        }
    }
}

impl ProducerContext for ErrorTracker {
    type DeliveryOpaque = Arc<BatchTracker>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<BatchTracker>) {
        let settled = match result {
            Ok(_) => Settled::Delivered,
            Err((e, msg)) => match classify(e) {
                SinkError::Permanent(reason) => Settled::Refused(ingest_id_of(msg), reason),
                retry => Settled::Retry(retry),
            },
        };
        tracker.settle_one(settled);
    }
}

impl ClientContext for ErrorTracker {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        let code = error.rdkafka_error_code();
        let mut state = lock(&self.state);
        state.fatal |= code == Some(RDKafkaErrorCode::Fatal);
        if !state.logged.contains(&code) {
            tracing::warn!(target: "edge_ingester::kafka", error = %text, "kafka client error");
            state.logged.push(code);
        }
        state.last = Some(text);
    }
}

type Producer = ThreadedProducer<ErrorTracker>;

/// One producer and what its client reported. NOTE: errors are kept per
/// generation: a late fatal error from a producer already replaced (its
/// threads still wind down) must not trigger another reset of the new one.
#[derive(Clone)]
struct Generation {
    producer: Arc<Producer>,
    errors: Arc<Mutex<ClientErrors>>,
    /// `hasten_producer_id` has been started for this producer.
    nudged: Arc<AtomicBool>,
}

pub struct KafkaSink {
    /// Replaced by `reset`; submissions clone the current one.
    current: Mutex<Generation>,
    /// Kept to build a new producer on `reset`.
    client: ClientConfig,
    logs_topic: String,
    metrics_topic: String,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig, node_id: &str) -> Result<KafkaSink, String> {
        cfg.check_promise()?;
        let client = client_config(cfg, node_id);
        let first = Generation::new(&client).map_err(|e| {
            let e = SettingsError::new(cfg, &e);
            format!("invalid Kafka producer settings: {}: {e}", e.key)
        })?;
        Ok(KafkaSink {
            current: Mutex::new(first),
            client,
            logs_topic: cfg.logs_topic.clone(),
            metrics_topic: cfg.metrics_topic.clone(),
        })
    }

    fn current(&self) -> Generation {
        lock(&self.current).clone()
    }
}

impl Generation {
    fn new(client: &ClientConfig) -> Result<Generation, KafkaError> {
        let errors = Arc::new(Mutex::new(ClientErrors::default()));
        let producer = client.create_with_context(ErrorTracker {
            state: errors.clone(),
        })?;
        Ok(Generation {
            producer: Arc::new(producer),
            errors,
            nudged: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Called with each submitted batch's topic; the first call starts
    /// `hasten_producer_id`. NOTE: at the first submit, not at creation:
    /// asking for a topic's metadata registers the topic with the producer
    /// for good (librdkafka then refreshes it every second while it is
    /// missing, and may auto-create it), so only a topic being produced to
    /// is asked about.
    fn nudge_producer_id(&self, topic: &str) {
        // Cheap once started: one load per batch, the name is not looked at.
        if self.nudged.load(Ordering::Relaxed) {
            return;
        }
        // A name it would not ask about leaves the nudge to a later topic
        // (the other kind's).
        let askable = !topic.is_empty() && topic.len() <= MAX_TOPIC_NAME && !topic.contains('\0');
        if !askable || self.nudged.swap(true, Ordering::Relaxed) {
            return;
        }
        let (weak, topic) = (Arc::downgrade(&self.producer), topic.to_string());
        // Without the thread the producer still works, only later.
        let _ = std::thread::Builder::new()
            .name("kafka-pid".into())
            .spawn(move || hasten_producer_id(&weak, &topic));
    }
}

/// Has a new idempotent producer ask for its producer id as soon as a
/// broker it learned from metadata is connected. NOTE: librdkafka first
/// tries when a metadata answer arrives, and runs its id request while it
/// reads each one (rdkafka_metadata.c). The first answer comes over the
/// bootstrap connection, which librdkafka retires as soon as that answer
/// names the real brokers; a retiring broker is not asked and the learned
/// one is not connected yet, so librdkafka waits for its 500 ms retry timer
/// (rdkafka_idempotence.c). Nothing is sent before the id: every start and
/// every reset of the sink sat idle about half a second (strace: the id
/// request went out 0.47 s after the learned broker's connection was up).
/// An answer that comes over a learned broker's connection finds that
/// broker up. Bounded: a cluster that is down leaves it to librdkafka's
/// timer. If this thread holds the last reference when the producer is
/// replaced or the service stops, the producer's drop (up to 500 ms of
/// flushing) runs here, and `run` does not wait for it; batches are
/// acknowledged only once delivered, so what it did not deliver stays
/// queued.
fn hasten_producer_id(producer: &std::sync::Weak<Producer>, topic: &str) {
    use rdkafka::producer::Producer as _;
    let deadline = std::time::Instant::now() + PID_NUDGE_FOR;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        // Replaced by a reset, or shut down: nothing left to hasten.
        let Some(producer) = producer.upgrade() else {
            return;
        };
        // The bootstrap connection answers as node -1. Only "no answer
        // yet" is worth asking again; any other error would repeat at once.
        match producer
            .client()
            .fetch_metadata(Some(topic), left.min(PID_NUDGE_WAIT))
        {
            Ok(md) if md.orig_broker_id() >= 0 => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::OperationTimedOut
                            | RDKafkaErrorCode::BrokerTransportFailure
                            | RDKafkaErrorCode::AllBrokersDown
                    )
                ) => {}
            Err(_) => return,
        }
        drop(producer);
        std::thread::sleep(PID_NUDGE_PAUSE);
    }
}

fn classify(err: &KafkaError) -> SinkError {
    let text = err.to_string();
    let Some(code) = err.rdkafka_error_code() else {
        return SinkError::Retriable(text);
    };
    if PERMANENT.contains(&code) {
        return SinkError::Permanent(text);
    }
    match NEEDS_OPERATOR.iter().find(|(c, _)| *c == code) {
        Some((_, fix)) => SinkError::Retriable(format!("{text} — {fix}; batches stay queued")),
        None => SinkError::Retriable(text),
    }
}

/// The `ingest-id` header of a message librdkafka hands back: read only on
/// failure, so a success costs nothing extra.
fn ingest_id_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == "ingest-id")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Sink for KafkaSink {
    fn producer_type(&self) -> &'static str {
        "KafkaProducer"
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT_BATCHES
    }

    fn max_in_flight_entries(&self) -> usize {
        MAX_IN_FLIGHT_ENTRIES
    }

    fn health(&self) -> Option<String> {
        lock(&self.current().errors).last.clone()
    }

    fn needs_reset(&self) -> bool {
        lock(&self.current().errors).fatal
    }

    /// Replaces the producer, with a clean error record. The old one purges
    /// what it still holds (those batches fail as retriable and are
    /// submitted again) and is dropped on a blocking thread: its drop flushes
    /// for up to 500 ms.
    fn reset(&self) -> Result<(), String> {
        // The settings were accepted at start, so only a creation error is
        // expected here (a CA file gone); its text quotes no value.
        let fresh = Generation::new(&self.client).map_err(|e| match e {
            KafkaError::ClientCreation(text) => format!("cannot recreate the producer: {text}"),
            _ => "cannot recreate the producer: its settings were refused".to_string(),
        })?;
        let old = std::mem::replace(&mut *lock(&self.current), fresh);
        std::thread::spawn(move || drop(old));
        Ok(())
    }

    fn submit<'a>(&'a self, rendered: &'a Rendered) -> SubmitFuture<'a> {
        Box::pin(async move {
            let topic = match rendered.kind() {
                Kind::Logs => self.logs_topic.as_str(),
                Kind::Metrics => self.metrics_topic.as_str(),
            };
            if rendered.is_empty() {
                return Ok(Box::pin(async { Ok(Confirmed::all()) }) as Delivery);
            }
            let (tx, rx) = oneshot::channel();
            let tracker = Arc::new(BatchTracker {
                remaining: AtomicUsize::new(rendered.len()),
                outcome: Mutex::new(Outcome::default()),
                done: Mutex::new(Some(tx)),
            });
            let generation = self.current();
            generation.nudge_producer_id(topic);
            let Generation {
                producer, errors, ..
            } = generation;
            for m in rendered.iter() {
                let headers = OwnedHeaders::new_with_capacity(2)
                    .insert(Header {
                        key: "ingest-id",
                        value: Some(m.ingest_id.as_bytes()),
                    })
                    .insert(Header {
                        key: "content-type",
                        value: Some(message::CONTENT_TYPE.as_bytes()),
                    });
                let mut record = BaseRecord::with_opaque_to(topic, tracker.clone())
                    .key(m.key.as_bytes())
                    .payload(m.value)
                    .headers(headers);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                        }
                        // librdkafka refused this one message before sending
                        // it (larger than message.max.bytes): only this entry
                        // goes to the dead letters.
                        Err((e, _)) if classify(&e).is_permanent() => {
                            tracker.settle_one(Settled::Refused(
                                Some(m.ingest_id.to_string()),
                                e.to_string(),
                            ));
                            break;
                        }
                        // Messages already handed over may still be delivered;
                        // the batch as a whole failed and nobody waits for it.
                        Err((e, _)) => return Err(classify(&e)),
                    }
                }
            }
            let client_errors = errors;
            let delivery: Delivery = Box::pin(async move {
                if rx.await.is_err() {
                    return Err(SinkError::Retriable("producer dropped the batch".into()));
                }
                let outcome = std::mem::take(&mut *lock(&tracker.outcome));
                if let Some(e) = outcome.retry.or(outcome.whole) {
                    return Err(e);
                }
                lock(&client_errors).clear();
                Ok(Confirmed {
                    refused: outcome.refused,
                })
            });
            Ok(delivery)
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::Producer as _;

    use super::*;

    fn fatal(generation: &Generation, reason: &str) {
        generation
            .producer
            .context()
            .error(KafkaError::Global(RDKafkaErrorCode::Fatal), reason);
    }

    #[test]
    fn a_late_fatal_error_from_a_replaced_producer_asks_for_no_reset() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        let sink = KafkaSink::new(&cfg, "node").unwrap();
        let old = sink.current();
        fatal(&old, "fenced");
        assert!(sink.needs_reset());
        sink.reset().unwrap();
        assert!(!sink.needs_reset());
        // The replaced producer still winds down and reports once more.
        fatal(&old, "late report from the old producer");
        assert!(
            !sink.needs_reset(),
            "the old producer's error reset the new one"
        );
        // (No check of `health()`: the new producer reports its own
        // unreachable broker at its own pace.)
        let late = sink.health().unwrap_or_default();
        assert!(!late.contains("late report"), "{late}");
    }

    #[test]
    fn a_refused_secret_is_never_quoted_in_the_error() {
        let err = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"s3cret-pw\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "s3cret-pw".into(),
        );
        let e = SettingsError::new(&KafkaConfig::default(), &err);
        assert_eq!(e.key, "kafka.properties");
        assert!(!e.problem.contains("s3cret-pw"), "{}", e.problem);
        assert!(e.problem.starts_with("`sasl.password`: "), "{}", e.problem);
    }

    #[test]
    fn zstd_is_compressed_at_level_1_unless_the_properties_pick_another_codec() {
        let level = |cfg: &KafkaConfig| {
            client_config(cfg, "n")
                .get("compression.level")
                .map(str::to_string)
        };
        let mut cfg = KafkaConfig::default();
        assert_eq!(cfg.compression, "zstd");
        assert_eq!(level(&cfg).as_deref(), Some("1"));
        cfg.properties
            .insert("compression.type".into(), "gzip".into());
        assert_eq!(level(&cfg), None);
        let cfg = KafkaConfig {
            compression: "lz4".into(),
            ..KafkaConfig::default()
        };
        assert_eq!(level(&cfg), None);
    }

    #[test]
    fn passwords_keys_and_oauth_settings_count_as_secrets() {
        for p in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
        ] {
            assert!(is_secret(p), "{p}");
        }
        for p in ["sasl.username", "ssl.ca.location", "security.protocol"] {
            assert!(!is_secret(p), "{p}");
        }
    }
}
