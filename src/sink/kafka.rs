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
//! Errors are classified explicitly: the codes in `PERMANENT` can never
//! succeed for that record and send the batch to the dead letters; every
//! other error is retriable and the batch is submitted again (same
//! `ingest-id`s).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use super::{message, Delivery, Sink, SinkError, SubmitFuture};
use crate::config::KafkaConfig;
use crate::model::Kind;
use crate::queue::{lock, Stored};

/// Errors for which a retry of the same record can never succeed.
const PERMANENT: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::InvalidMessage,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::MessageBatchTooLarge,
];

/// Batches in flight at once: enough to keep librdkafka's batches full
/// (NOTES: awaiting sends one by one gives 184 msg/s; pipelined, 270k+).
const MAX_IN_FLIGHT_BATCHES: usize = 256;
/// Entries in flight at once; bounds librdkafka's queue and our memory.
const MAX_IN_FLIGHT_ENTRIES: usize = 50_000;
/// Pause before retrying a `send` into a full librdkafka queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Producer settings the service needs; `[kafka.properties]` may override
/// any of them except where `KafkaConfig::check_promise` forbids it.
fn defaults(cfg: &KafkaConfig, node_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", cfg.brokers.clone()),
        ("client.id", format!("edge-ingester-{node_id}")),
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", cfg.compression.clone()),
        ("linger.ms", "5".into()),
        ("batch.num.messages", "10000".into()),
        (
            "queue.buffering.max.messages",
            (2 * MAX_IN_FLIGHT_ENTRIES).to_string(),
        ),
        ("message.timeout.ms", "0".into()),
        // NOTE: the 10 s default delays recovery after an outage by 6–9 s
        // (NOTES.md); 1 s brings the first success within about a second.
        ("reconnect.backoff.ms", "100".into()),
        ("reconnect.backoff.max.ms", "1000".into()),
        // A broker that stops answering (SIGSTOP, a dead link) is detected in
        // 10 s instead of 60 s; requests are then retried, in order.
        ("socket.timeout.ms", "10000".into()),
        ("socket.keepalive.enable", "true".into()),
    ]
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
    /// The first failure; a permanent one replaces a retriable one.
    failure: Mutex<Option<SinkError>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl BatchTracker {
    fn settle_one(&self, outcome: Option<SinkError>) {
        if let Some(err) = outcome {
            let mut f = lock(&self.failure);
            if f.as_ref().is_none_or(|x| !x.is_permanent()) {
                *f = Some(err);
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
        tracker.settle_one(result.as_ref().err().map(|(e, _)| classify(e)));
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
        let mut client = ClientConfig::new();
        for (k, v) in defaults(cfg, node_id) {
            client.set(k, v);
        }
        for (k, v) in &cfg.properties {
            client.set(k, v);
        }
        Ok(KafkaSink {
            current: Mutex::new(Generation::new(&client)?),
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
    fn new(client: &ClientConfig) -> Result<Generation, String> {
        let errors = Arc::new(Mutex::new(ClientErrors::default()));
        let producer = client
            .create_with_context(ErrorTracker {
                state: errors.clone(),
            })
            .map_err(|e| format!("invalid Kafka producer settings: {e}"))?;
        Ok(Generation {
            producer: Arc::new(producer),
            errors,
        })
    }
}

fn classify(err: &KafkaError) -> SinkError {
    let text = err.to_string();
    match err.rdkafka_error_code() {
        Some(code) if PERMANENT.contains(&code) => SinkError::Permanent(text),
        _ => SinkError::Retriable(text),
    }
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
        let fresh = Generation::new(&self.client)?;
        let old = std::mem::replace(&mut *lock(&self.current), fresh);
        std::thread::spawn(move || drop(old));
        Ok(())
    }

    fn submit<'a>(&'a self, stored: &'a Stored, node_id: &'a str) -> SubmitFuture<'a> {
        Box::pin(async move {
            let topic = match stored.batch.kind() {
                Kind::Logs => self.logs_topic.as_str(),
                Kind::Metrics => self.metrics_topic.as_str(),
            };
            let rendered = message::render(&stored.batch, node_id, stored.seq);
            if rendered.is_empty() {
                return Ok(Box::pin(async { Ok(()) }) as Delivery);
            }
            let (tx, rx) = oneshot::channel();
            let tracker = Arc::new(BatchTracker {
                remaining: AtomicUsize::new(rendered.len()),
                failure: Mutex::new(None),
                done: Mutex::new(Some(tx)),
            });
            let Generation { producer, errors } = self.current();
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
                match lock(&tracker.failure).take() {
                    None => {
                        lock(&client_errors).clear();
                        Ok(())
                    }
                    Some(e) => Err(e),
                }
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
}
