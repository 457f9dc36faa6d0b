//! Accepting connections and serving HTTP on them, with the limits that keep
//! slow or abusive clients from taking the service down.
//!
//! NOTE: poem's `Server` configures hyper without a timer, so hyper's
//! `header_read_timeout` never fires and a client trickling its headers
//! holds a connection forever (slowloris). This loop drives hyper directly:
//! - `server.header_timeout_ms`: every connection must deliver a complete
//!   request head within it of being accepted, whatever its first bytes,
//!   and a connection with no request in progress is closed once it has
//!   been idle that long (HTTP/1.1 keep-alive and HTTP/2 alike). NOTE:
//!   hyper's own clocks do not cover this: its header timeout starts only
//!   once an HTTP/1 connection exists, and hyper-util's version detection
//!   read a lone `P` (a prefix of the HTTP/2 preface) with no timer at all —
//!   such a connection was still open after 8 s with a 5 s timeout — while
//!   an HTTP/2 connection had no idle limit. So the loop keeps its own
//!   watch over each connection's requests (`Activity`);
//! - HTTP/2: keep-alive pings (`H2_KEEP_ALIVE`) so a vanished peer is
//!   noticed, and at most `H2_MAX_STREAMS` concurrent streams, so one
//!   connection cannot multiply the bodies held in memory;
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

use super::tls::Tls;
use crate::config::ServerConfig;

/// What poem turns a response into for hyper.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// How long shutdown waits for requests in progress.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (EMFILE and the like) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// HTTP/2 keep-alive: a ping this often, and the connection is closed if
/// the peer does not answer within as long.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Concurrent streams one HTTP/2 connection may open (hyper's default is
/// 200); each may hold a request body.
const H2_MAX_STREAMS: u32 = 100;
/// How long an idle connection's graceful close (GOAWAY) may take before
/// the connection is simply dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Requests in progress on one connection and when the last one ended: what
/// the idle and first-request deadlines are measured against.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Whether any request ever started: one that never did gets no
    /// graceful close, only a closed socket.
    served: std::sync::atomic::AtomicBool,
    /// Since when the connection has had nothing in progress (accept time
    /// until its first request).
    idle_since: Mutex<tokio::time::Instant>,
    /// Signalled when a request ends, so the idle deadline is re-read.
    ended: tokio::sync::Notify,
}

/// Held while a request is served; marks the connection busy.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            served: std::sync::atomic::AtomicBool::new(false),
            idle_since: Mutex::new(tokio::time::Instant::now()),
            ended: tokio::sync::Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.served
            .store(true, std::sync::atomic::Ordering::Release);
        Busy(self.clone())
    }

    /// When the connection becomes too idle to keep, if nothing starts
    /// before; `None` while a request is in progress.
    fn idle_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        Some(*crate::queue::lock(&self.idle_since) + timeout)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *crate::queue::lock(&self.0.idle_since) = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        // A stored permit if nobody waits yet: the wake-up is never lost.
        self.0.ended.notify_one();
    }
}

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

/// Serves `ep` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves, then lets requests in progress finish (bounded by
/// `GRACEFUL_TIMEOUT`).
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    limits: Limits,
    tls: Option<Arc<Tls>>,
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
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE)
        .max_concurrent_streams(H2_MAX_STREAMS)
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
        let activity = Activity::new();
        let conn = Conn {
            builder: builder.clone(),
            ep: ep.clone(),
            local: local.clone(),
            peer,
            activity,
            header_timeout: limits.header_timeout,
            stop_rx: stop_rx.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            // Returned when the connection ends, however it ends.
            let _held = (permit, ip_slot);
            let Some(tls) = tls else {
                return conn.drive(stream, Scheme::HTTP).await;
            };
            // The handshake counts against the first request's header
            // deadline: a client that never finishes it is cut as one that
            // never sends its headers.
            let deadline = tokio::time::Instant::now() + limits.header_timeout;
            match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                Ok(Ok(Some(stream))) => conn.drive(stream, Scheme::HTTPS).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake not finished in time"),
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

/// One accepted connection and what serving it needs.
struct Conn<E> {
    builder: auto::Builder<TokioExecutor>,
    ep: Arc<E>,
    local: LocalAddr,
    peer: SocketAddr,
    activity: Arc<Activity>,
    header_timeout: Duration,
    stop_rx: watch::Receiver<bool>,
}

impl<E> Conn<E>
where
    E: Endpoint<Output = Response> + 'static,
{
    /// Serves requests on `io` until the client leaves, idles too long or
    /// the server stops.
    async fn drive<I>(self, io: I, scheme: Scheme)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            ep,
            local,
            peer,
            activity,
            header_timeout,
            mut stop_rx,
        } = self;
        // NOTE: `wait_for` returns a guard that is not `Send`; drop it
        // before anything else is awaited.
        let mut stopping = std::pin::pin!(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        });
        let service = service(ep, local, peer, activity.clone(), scheme);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let ended = loop {
            let idle = activity.idle_deadline(header_timeout);
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = &mut stopping => {
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
                _ = sleep_until(idle) => {
                    if activity.idle_deadline(header_timeout)
                        .is_some_and(|d| d <= tokio::time::Instant::now())
                    {
                        // No request head in time: just close. Idle after
                        // requests: GOAWAY / close, then drop it regardless.
                        if activity.served.load(std::sync::atomic::Ordering::Acquire) {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn.as_mut()).await;
                        }
                        return;
                    }
                }
                // A request ended: look at the deadline again.
                _ = activity.ended.notified(), if idle.is_none() => {}
            }
        };
        // Errors here are the client's (reset, timeout, bad request head);
        // hyper has already answered what it could.
        if let Err(e) = ended {
            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        }
    }
}

/// One connection's hyper service: each request through the poem endpoint.
fn service<E>(
    ep: Arc<E>,
    local: LocalAddr,
    peer: SocketAddr,
    activity: Arc<Activity>,
    scheme: Scheme,
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
        let busy = activity.begin();
        let req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
        async move {
            let resp = ep.get_response(req).await;
            drop(busy);
            Ok::<_, Infallible>(hyper::Response::<ResponseBody>::from(resp))
        }
    })
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
