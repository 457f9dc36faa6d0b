//! The in-flight body budget (`server.max_inflight_bytes`): request bodies
//! held in memory at once, across every connection and HTTP/2 stream.
//!
//! NOTE: without it memory was bounded only by `max_connections` ×
//! (the body on the wire + inflated + parsed) × streams per connection —
//! 1024 × ~3 × 10 MiB at the defaults. Bytes are taken as they arrive, so a
//! request is refused (503 with `Retry-After`) at the chunk that would cross
//! the budget, never after buffering all of it; everything it held is given
//! back when the request ends, however it ends.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::error::Rejection;

/// Shared by every request.
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: u64,
}

/// What one request holds; returned to the budget on drop.
#[derive(Default)]
pub struct Held {
    permits: Option<OwnedSemaphorePermit>,
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        let total = total.min(Semaphore::MAX_PERMITS as u64);
        Budget {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Takes `n` more bytes for the request holding `held`, or refuses at
    /// once: waiting would hold a connection and its bytes meanwhile.
    pub fn take(&self, held: &mut Held, n: usize) -> Result<(), Rejection> {
        if n == 0 {
            return Ok(());
        }
        let refused = || Rejection::Busy {
            in_flight: self.total - self.bytes.available_permits() as u64,
            budget: self.total,
        };
        let n = u32::try_from(n).map_err(|_| refused())?;
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                match &mut held.permits {
                    Some(all) => all.merge(p),
                    none => *none = Some(p),
                }
                Ok(())
            }
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_when_a_request_ends() {
        let b = Budget::new(100);
        let mut first = Held::default();
        b.take(&mut first, 60).unwrap();
        b.take(&mut first, 30).unwrap();
        let mut second = Held::default();
        assert!(matches!(
            b.take(&mut second, 20),
            Err(Rejection::Busy {
                in_flight: 90,
                budget: 100
            })
        ));
        drop(first);
        b.take(&mut second, 100).unwrap();
    }
}
