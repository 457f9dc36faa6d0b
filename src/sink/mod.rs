//! Where batches go: the `Sink` trait and its implementations.
//!
//! A sink confirms a batch only when every entry of it was delivered; the
//! forwarder removes the batch from the queue only after that. `message.rs`
//! renders the Kafka message of an entry (SPEC §4) for every sink, so the
//! mock producer's capture holds exactly what Kafka would get.

pub mod message;
pub mod mock;

use std::future::Future;
use std::pin::Pin;

use crate::queue::Stored;

/// Why a sink did not confirm a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Transport errors, timeouts, an unreachable or failing broker: retrying
    /// the same batch later can succeed; feeds the backoff and the breaker.
    #[error("{0}")]
    Retriable(String),
    /// The sink will never accept this batch (e.g. a record too large):
    /// retrying cannot help, so it goes to the dead letters.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Permanent(_))
    }
}

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

pub trait Sink: Send + Sync {
    /// `producer_type` in `/stats`.
    fn producer_type(&self) -> &'static str;

    /// Delivers every entry of the batch, or fails as a whole.
    fn send<'a>(&'a self, batch: &'a Stored, node_id: &'a str) -> SinkFuture<'a>;
}
