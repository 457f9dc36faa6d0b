//! Where batches go: the `Sink` trait and its implementations.
//!
//! Sending is two-phase so batches can be pipelined without losing order:
//! `submit` hands every entry of a batch to the sink — the forwarder calls
//! it for one batch at a time, in queue order, so that is the order the sink
//! sees — and returns a `Delivery` that resolves once every entry is
//! confirmed or refused for good. The forwarder removes a batch from the
//! queue only then, moving the refused entries (never the confirmed ones)
//! to the dead letters.
//! `message.rs` renders the Kafka message of an entry (SPEC §4) for every
//! sink, so the mock producer's capture holds exactly what Kafka would get.

pub mod kafka;
pub mod message;
pub mod mock;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use self::message::Rendered;
pub use crate::queue::Refusal;

/// Why a sink did not confirm a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Transport errors, an unreachable or failing broker, an unknown topic:
    /// retrying the same batch later can succeed; feeds backoff and breaker.
    #[error("{0}")]
    Retriable(String),
    /// The sink will never accept any entry of this batch: retrying cannot
    /// help, so the whole batch goes to the dead letters. (A sink that can
    /// tell which entries it refused returns `Confirmed::refused` instead.)
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Permanent(_))
    }
}

/// The sink's final word on a batch: it took every entry but `refused`,
/// which it will never take (too large, invalid).
#[derive(Debug, Default)]
pub struct Confirmed {
    pub refused: Vec<Refusal>,
}

impl Confirmed {
    /// Every entry taken.
    pub fn all() -> Confirmed {
        Confirmed::default()
    }
}

/// Resolves when every entry of a submitted batch is confirmed or refused
/// for good; `Err` if any must be sent again.
pub type Delivery = Pin<Box<dyn Future<Output = Result<Confirmed, SinkError>> + Send + 'static>>;

pub type SubmitFuture<'a> = Pin<Box<dyn Future<Output = Result<Delivery, SinkError>> + Send + 'a>>;

pub trait Sink: Send + Sync {
    /// `producer_type` in `/stats`.
    fn producer_type(&self) -> &'static str;

    /// Batches that may await confirmation at once.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Entries that may await confirmation at once (bounds memory).
    fn max_in_flight_entries(&self) -> usize {
        usize::MAX
    }

    /// How long the oldest submitted batch may wait for its confirmation
    /// before the forwarder counts it as a failure (an outage), without
    /// cancelling it.
    fn stall_after(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Hands the batch's messages to the sink; see the module doc.
    fn submit<'a>(&'a self, batch: &'a Rendered) -> SubmitFuture<'a>;

    /// The sink's own account of what is wrong (e.g. every broker down),
    /// shown in `last_error` while deliveries stall.
    fn health(&self) -> Option<String> {
        None
    }

    /// The sink knows it cannot recover by itself (e.g. a fatal producer
    /// error) and should be `reset`.
    fn needs_reset(&self) -> bool {
        false
    }

    /// Takes the settings of a SIGHUP reload that may change while serving
    /// (`mock.*`); an `Err` means nothing changed. Kafka's settings need a
    /// restart, so the default takes none.
    fn reload(&self, _config: &crate::config::Config) -> Result<(), String> {
        Ok(())
    }

    /// Rebuilds the sink's client. Everything submitted before is abandoned:
    /// the forwarder submits it again from the queue head.
    fn reset(&self) -> Result<(), String> {
        Ok(())
    }
}
