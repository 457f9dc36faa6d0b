//! A batch of serialized entries on its way to the ingester: one body, one
//! `Idempotency-Key`, halves on 413 (SPEC §7).

use bytes::Bytes;

use super::client::{Answer, Client, Endpoint, Fatal};
use super::AGENT_VERSION;

/// One entry, serialized, and where it came from (a byte range of a
/// followed file; for stdin, its place in the batch).
#[derive(Debug, Clone)]
pub struct Item {
    pub json: Vec<u8>,
    pub start: u64,
    pub end: u64,
}

/// What became of a batch's entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    pub accepted: usize,
    /// Refused for good (400/422, or a single entry still too large).
    pub dropped: usize,
}

/// `{"entries":[…],"agent_version":"…"}`.
pub fn body(items: &[Item]) -> Bytes {
    let len: usize = items.iter().map(|i| i.json.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(b"{\"entries\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.extend_from_slice(b"],\"agent_version\":\"");
    out.extend_from_slice(AGENT_VERSION.as_bytes());
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

/// Keys for a batch with no file behind it (stdin, metrics): random per
/// batch, the same across its retries; a 413's halves are told apart by
/// the places of their items (`start..end`).
pub fn random_key() -> impl Fn(&[Item]) -> String + Sync {
    let key = uuid::Uuid::new_v4().to_string();
    move |part: &[Item]| format!("{key}-{}-{}", part[0].start, part[part.len() - 1].end)
}

/// Sends `items` until the server answered for each of them; a 413 splits
/// the batch in halves, each with its own key (`key` of its items, so the
/// same halves get the same keys when the batch is sent again after a
/// restart). Halves go in order.
pub async fn ship(
    client: &Client,
    endpoint: Endpoint,
    items: &[Item],
    key: &(dyn Fn(&[Item]) -> String + Sync),
) -> Result<Shipped, Fatal> {
    let mut done = Shipped::default();
    // Ranges still to send, the next one last.
    let mut todo = Vec::new();
    todo.push(0..items.len());
    while let Some(range) = todo.pop() {
        let part = &items[range.clone()];
        if part.is_empty() {
            continue;
        }
        tracing::info!(batch_size = part.len(), "Sending batch");
        match client.send(endpoint, body(part), &key(part)).await? {
            Answer::Accepted => {
                tracing::info!("Batch sent successfully");
                done.accepted += part.len();
            }
            Answer::TooLarge if part.len() > 1 => {
                let mid = range.start + part.len() / 2;
                tracing::warn!(
                    batch_size = part.len(),
                    "batch too large for the server (413); splitting it in halves"
                );
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Answer::TooLarge => {
                tracing::error!("a single entry is too large for the server (413); dropped");
                done.dropped += 1;
            }
            Answer::Dropped { status, detail } => {
                tracing::error!(
                    status,
                    detail,
                    entries = part.len(),
                    "server refused the batch for good; dropped"
                );
                done.dropped += part.len();
            }
        }
    }
    Ok(done)
}
