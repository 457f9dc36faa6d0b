//! Accepting connections and serving HTTP on them, with the limits that keep
//! slow or abusive clients from taking the service down.
//!
//! NOTE: poem's `Server` configures hyper without a timer, so hyper's
//! `header_read_timeout` never fires and a client trickling its headers
//! holds a connection forever (slowloris). This loop drives hyper directly:
//! - `server.header_timeout_ms`: the request head must arrive in time, on
//!   every request of a keep-alive connection, or the connection is closed.
//!   hyper starts that clock only once a first byte has arrived, so a
//!   connection that sends nothing at all is bounded here, by the same
//!   timeout, before hyper gets it;
//! - `server.max_header_bytes`: hyper's read buffer, so a larger head is a
//!   431 and never grows memory;
//! - `server.max_connections`: the loop waits for a free slot before it
//!   accepts, so excess connections wait in the kernel's backlog instead of
//!   each costing a task and buffers;
//! - `server.max_connections_per_ip`: a connection from an address that
//!   already holds that many is closed at once, so one host cannot hold
//!   every slot.
//!
//! The request body's own deadline (`request_timeout_ms`) is in `ingest.rs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::ServerConfig;

/// What poem turns a response into for hyper.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// How long shutdown waits for requests in progress.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (EMFILE and the like) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn from_config(s: &ServerConfig) -> Limits {
        Limits {
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            max_header_bytes: s.max_header_bytes,
        }
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's share of its address's count, returned on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = crate::queue::lock(&table.0);
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = crate::queue::lock(&self.table.0);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `ep` on `listener` until `shutdown` resolves, then lets requests
/// in progress finish (bounded by `GRACEFUL_TIMEOUT`).
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let ep = Arc::new(ep);
    let local = LocalAddr(listener.local_addr()?.into());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(ip_slot) = PerIp::take(&per_ip, peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            continue; // dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        let (builder, service) = (builder.clone(), service(ep.clone(), local.clone(), peer));
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            // NOTE: `wait_for` returns a guard that is not `Send`; drop it
            // before anything else is awaited.
            let mut stopping = std::pin::pin!(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            });
            // Returned when the connection ends, however it ends.
            let _held = (permit, ip_slot);
            let mut first = [0u8; 1];
            tokio::select! {
                r = tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)) => {
                    if !matches!(r, Ok(Ok(n)) if n > 0) {
                        return; // silent, closed or failed: drop it
                    }
                }
                _ = &mut stopping => return,
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = &mut stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            // Errors here are the client's (reset, timeout, bad request
            // head); hyper has already answered what it could.
            if let Err(e) = ended {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all
    // requests in progress finished.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(GRACEFUL_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still in progress after the grace period were cut");
    }
    Ok(())
}

/// One connection's hyper service: each request through the poem endpoint.
fn service<E>(
    ep: Arc<E>,
    local: LocalAddr,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<ResponseBody>, Infallible>> + Send,
> + Clone
where
    E: Endpoint<Output = Response> + 'static,
{
    let remote = RemoteAddr(peer.into());
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let ep = ep.clone();
        let req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
        async move {
            let resp = ep.get_response(req).await;
            Ok::<_, Infallible>(hyper::Response::<ResponseBody>::from(resp))
        }
    })
}
