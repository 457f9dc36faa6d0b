//! Slow and abusive clients, against the default limits: connections that
//! trickle their headers, or send nothing, are cut after `header_timeout_ms`, one address
//! cannot hold more than `max_connections_per_ip`, an oversized request head
//! is refused — and all the while a normal client gets its 202.
//!
//! The abusive connections come from other loopback addresses (127.0.0.2,
//! 127.0.0.3: Linux routes all of 127/8 to `lo`), the normal client from
//! 127.0.0.1, as a different host would.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_ingester::config::{
    DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(server).await
}

/// Sends a request head one byte every 100 ms, never finishing it; returns
/// how long the server kept the connection open (`None`: longer than `limit`).
async fn trickle(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let head = b"POST /logs HTTP/1.1\r\nHost: edge\r\nX-Slow: ";
    let mut buf = [0u8; 512];
    let mut i = 0;
    while start.elapsed() < limit {
        let byte = head.get(i).copied().unwrap_or(b'a');
        i += 1;
        if s.write_all(&[byte]).await.is_err() {
            return Some(start.elapsed());
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {} // a 408 may come first; the close follows
            Err(_) => {}
        }
    }
    None
}

/// Connects and sends nothing; returns how long the server kept the
/// connection open (`None`: longer than `limit`).
async fn silent(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(_) => Some(start.elapsed()),
        Err(_) => None,
    }
}

/// How many of the connections the server closed, and the longest it took.
async fn cut_times(handles: Vec<tokio::task::JoinHandle<Option<Duration>>>) -> (usize, Duration) {
    let mut cut = Vec::new();
    for h in handles {
        cut.extend(h.await.unwrap());
    }
    (cut.len(), cut.into_iter().max().unwrap_or_default())
}

async fn normal_post(c: &reqwest::Client, base: &str) -> (u16, Duration) {
    let start = Instant::now();
    let r = post_json(c, &format!("{base}/logs"), &log_batch(&["ok".into()])).await;
    (r.status().as_u16(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_abusive_clients_do_not_stop_a_normal_one() {
    let dir = tempfile::tempdir().unwrap();
    // Default connection limits: what an operator gets out of the box.
    let server = InProcess::start(test_config(dir.path())).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let c = client();
    let header_timeout = Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS);

    // 1. 200 connections trickling headers from one host, and 50 that send
    //    nothing at all from another.
    let limit = header_timeout * 3;
    let mut tricklers = Vec::new();
    for _ in 0..200 {
        let s = connect_from("127.0.0.2", addr).await.unwrap();
        tricklers.push(tokio::spawn(trickle(s, limit)));
    }
    let mut silents = Vec::new();
    for _ in 0..50 {
        let s = connect_from("127.0.0.4", addr).await.unwrap();
        silents.push(tokio::spawn(silent(s, limit)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, took) = normal_post(&c, &server.base).await;
    eprintln!("normal client during the trickle: {status} in {took:?}");
    assert_eq!(status, 202);
    assert!(
        took < Duration::from_secs(2),
        "normal client waited {took:?}"
    );

    let (cut, longest) = cut_times(tricklers).await;
    eprintln!(
        "trickling connections cut by the server: {cut} of 200, the longest after {longest:?}"
    );
    assert_eq!(cut, 200, "some trickling connections were never cut");
    assert!(
        longest < header_timeout + Duration::from_secs(2),
        "cut only after {longest:?} (header timeout {header_timeout:?})"
    );
    let (closed, longest) = cut_times(silents).await;
    eprintln!(
        "silent connections closed by the server: {closed} of 50, the longest after {longest:?}"
    );
    assert_eq!(closed, 50, "some silent connections were never closed");
    assert!(longest < header_timeout + Duration::from_secs(2));

    // 2. One address opening more than its share: the excess is closed at
    //    once. All of it well inside the header timeout, which would close
    //    the held connections too.
    let extra = 50;
    let mut conns = Vec::new();
    for _ in 0..DEFAULT_MAX_CONNECTIONS_PER_IP + extra {
        conns.push(connect_from("127.0.0.3", addr).await.unwrap());
    }
    let probes: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut b = [0u8; 16];
                let closed = matches!(
                    tokio::time::timeout(Duration::from_millis(2500), s.read(&mut b)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                );
                (closed, s)
            })
        })
        .collect();
    let mut held = Vec::new();
    let refused = Arc::new(AtomicUsize::new(0));
    for p in probes {
        match p.await.unwrap() {
            (true, _) => {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            (false, s) => held.push(s),
        }
    }
    eprintln!(
        "127.0.0.3 opened {}: {} held, {} closed at once",
        DEFAULT_MAX_CONNECTIONS_PER_IP + extra,
        held.len(),
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(held.len(), DEFAULT_MAX_CONNECTIONS_PER_IP);
    assert_eq!(refused.load(Ordering::Relaxed), extra);
    let (status, took) = normal_post(&c, &server.base).await;
    eprintln!("normal client while 127.0.0.3 holds its share: {status} in {took:?}");
    assert_eq!(status, 202);
    drop(held);

    // 3. An oversized request head is refused, not buffered.
    let big = "x".repeat(DEFAULT_MAX_HEADER_BYTES * 2);
    let r = c
        .post(server.url("/logs"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .header("x-padding", big)
        .body(serde_json::to_vec(&log_batch(&["big".into()])).unwrap())
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status().as_u16(), 431),
        // hyper may close before the client finished writing the head.
        Err(e) => eprintln!("oversized head: connection closed ({e})"),
    }
    let (status, _) = normal_post(&c, &server.base).await;
    assert_eq!(status, 202);
    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_batches"], 3, "{}", s["queue"]);
    server.stop().await;
}

/// Connects from `source`, writes `bytes`, then waits; returns how long the
/// server kept the connection open (`None`: longer than `limit`).
async fn send_then_wait(
    source: &str,
    server: SocketAddr,
    bytes: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let mut s = connect_from(source, server).await.unwrap();
    let start = Instant::now();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 256];
    let deadline = start + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {} // e.g. the server's SETTINGS frame; the close follows
            Err(_) => return None,
        }
    }
}

/// One HTTP/2 request, then silence; returns the status and how long after
/// the response the server closed the connection (`None`: not within `limit`).
async fn h2_request_then_idle(server: SocketAddr, limit: Duration) -> (u16, Option<Duration>) {
    let tcp = connect_from("127.0.0.6", server).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = closed_tx.send(Instant::now());
    });
    let req = poem::http::Request::post(format!("http://{server}/logs"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(())
        .unwrap();
    let body = serde_json::to_vec(&log_batch(&["h2".into()])).unwrap();
    let (resp, mut stream) = send.send_request(req, false).unwrap();
    stream.send_data(body.into(), true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let answered = Instant::now();
    // `send` stays alive: the client itself never closes the connection.
    let closed_at = tokio::time::timeout(limit, closed).await;
    drop(send);
    (status, closed_at.ok().map(|t| t.unwrap() - answered))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prefaces_and_idle_connections_are_cut_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // Short, so the test is quick; the margin below is for a loaded machine.
    cfg.server.header_timeout_ms = 1_000;
    let header_timeout = Duration::from_millis(cfg.server.header_timeout_ms);
    let server = InProcess::start(cfg).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let limit = header_timeout * 6;
    let bound = header_timeout + Duration::from_secs(2);

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let cases: [(&str, &[u8]); 3] = [
        ("one byte `P`", b"P"),
        ("23 bytes of the preface", &PREFACE[..23]),
        ("the whole preface, then nothing", PREFACE),
    ];
    let handles: Vec<_> = cases
        .iter()
        .map(|(name, bytes)| {
            let bytes = bytes.to_vec();
            let name = name.to_string();
            tokio::spawn(
                async move { (name, send_then_wait("127.0.0.5", addr, &bytes, limit).await) },
            )
        })
        .collect();
    let (h2_status, h2_idle) = h2_request_then_idle(addr, limit).await;
    for h in handles {
        let (name, cut) = h.await.unwrap();
        eprintln!("{name}: closed after {cut:?}");
        let cut = cut.unwrap_or_else(|| panic!("{name}: still open after {limit:?}"));
        assert!(cut < bound, "{name}: closed only after {cut:?}");
    }
    eprintln!("HTTP/2 connection: {h2_status}, closed {h2_idle:?} after its last response");
    assert_eq!(h2_status, 202);
    let idle = h2_idle.expect("an idle HTTP/2 connection was never closed");
    assert!(
        idle < bound,
        "idle HTTP/2 connection closed only after {idle:?}"
    );

    // An idle HTTP/1.1 keep-alive connection too.
    let mut s = connect_from("127.0.0.7", addr).await.unwrap();
    let body = serde_json::to_vec(&log_batch(&["h1".into()])).unwrap();
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: edge\r\ncontent-type: application/json\r\n\
         x-api-key: {KEY}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let idle = answered.elapsed();
    eprintln!("HTTP/1.1 keep-alive connection closed {idle:?} after its response");
    assert!(
        closed.is_ok() && idle < bound,
        "idle HTTP/1.1 kept {idle:?}"
    );
    server.stop().await;
}
