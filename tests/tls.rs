//! HTTPS on the listener (SPEC §9): a certificate made here, clients that
//! verify it, h1 and h2 by ALPN, plain HTTP refused, the slow-client limits
//! over TLS, and the certificate replaced by SIGHUP.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{log_batch, test_config, write_config, Binary, KEY};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn certificate() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn start(dir: &Path, pair: &(String, String), header_timeout_ms: u64) -> Binary {
    write_pair(dir, pair);
    let mut cfg = test_config(dir);
    cfg.server.tls.cert_path = dir.join("cert.pem");
    cfg.server.tls.key_path = dir.join("key.pem");
    cfg.server.header_timeout_ms = header_timeout_ms;
    let path = write_config(dir, "c.toml", &cfg);
    let mut server = Binary::start(&path);
    server.base = server.base.replace("http://", "https://");
    server
}

/// A client that trusts only `cert`.
fn client(cert: &str, http1_only: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap());
    let b = if http1_only { b.http1_only() } else { b };
    b.build().unwrap()
}

async fn post(c: &reqwest::Client, base: &str) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{base}/logs"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(serde_json::to_vec(&log_batch(&["tls-1".into()])).unwrap())
        .send()
        .await
}

fn addr(server: &Binary) -> std::net::SocketAddr {
    server.base.trim_start_matches("https://").parse().unwrap()
}

#[tokio::test]
async fn https_serves_h1_and_h2_by_alpn_to_a_verifying_client_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let pair = certificate();
    let server = start(dir.path(), &pair, 5_000);

    let h1 = post(&client(&pair.0, true), &server.base).await.unwrap();
    assert_eq!(h1.status(), 202);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    let h2 = post(&client(&pair.0, false), &server.base).await.unwrap();
    assert_eq!(h2.status(), 202);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);

    // A client that does not trust this certificate refuses the server.
    let other = certificate();
    let err = post(&client(&other.0, false), &server.base)
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP on the HTTPS port: a 400 that says what to do, nothing stored.
    let plain = reqwest::Client::new();
    let r = post(&plain, &server.base.replace("https://", "http://"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("HTTPS"), "{body}");
    let st = common::stats(&client(&pair.0, false), &server.base).await;
    assert_eq!(st["logs_received"], 2);
}

/// How long until the server closes a connection that `act` left waiting.
async fn closed_after(mut s: tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((t + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_or_its_headers_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let pair = certificate();
    let server = start(dir.path(), &pair, 500);
    let at = addr(&server);

    // Connects and says nothing.
    let silent = tokio::net::TcpStream::connect(at).await.unwrap();
    // Starts a handshake (the first bytes of a ClientHello) and stalls.
    let mut stalled = tokio::net::TcpStream::connect(at).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // Finishes the handshake, then never sends a request.
    let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pair.0.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut idle_tls = connector.connect(name, tcp).await.unwrap();

    let limit = Duration::from_secs(5);
    let (a, b) = tokio::join!(closed_after(silent, limit), closed_after(stalled, limit));
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let c = tokio::time::timeout(limit, idle_tls.read(&mut buf))
        .await
        .map(|_| t.elapsed());
    for (what, cut) in [
        ("silent", a),
        ("stalled handshake", b),
        ("idle after handshake", c.ok()),
    ] {
        let cut = cut.unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        assert!(
            cut < Duration::from_secs(3),
            "{what}: cut only after {cut:?}"
        );
    }
    // And the server still serves.
    assert_eq!(
        post(&client(&pair.0, false), &server.base)
            .await
            .unwrap()
            .status(),
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_the_certificate_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate();
    let server = start(dir.path(), &first, 5_000);
    // An HTTP/2 connection opened with the first certificate.
    let old = client(&first.0, false);
    assert_eq!(post(&old, &server.base).await.unwrap().status(), 202);

    // The renewal writes over the same files, as certbot does.
    let second = certificate();
    write_pair(dir.path(), &second);
    server.sighup();
    tokio::task::block_in_place(|| {
        server.wait_for_log(Duration::from_secs(20), |l| l.contains("config reloaded"))
    });

    // New connections get the new certificate…
    assert_eq!(
        post(&client(&second.0, false), &server.base)
            .await
            .unwrap()
            .status(),
        202
    );
    assert!(post(&client(&first.0, true), &server.base).await.is_err());
    // …and the connection opened before is still served.
    assert_eq!(post(&old, &server.base).await.unwrap().status(), 202);

    // A broken key file is refused: nothing changes, still serving.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    server.sighup();
    tokio::task::block_in_place(|| {
        server.wait_for_log(Duration::from_secs(20), |l| {
            l.contains("config reload failed")
        })
    });
    assert_eq!(
        post(&client(&second.0, true), &server.base)
            .await
            .unwrap()
            .status(),
        202
    );
}

/// The binary under test: CI's release build (built without the test's
/// features) when `EDGE_INGESTER_BIN` names it.
fn exe() -> std::path::PathBuf {
    std::env::var_os("EDGE_INGESTER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-ingester").into())
}

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(exe())
        .args(args)
        .env_remove("INGESTION_API_KEY")
        .env_remove("INGESTION_API_URL")
        .env_remove("INGESTION_CA_CERT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `run` from a test on the multi-threaded runtime, which must exit 0.
fn run_ok(args: &[&str], stdin: &str) -> std::process::Output {
    let out = tokio::task::block_in_place(|| run(args, stdin));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_stats_top_and_log_agent_reach_an_https_server_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pair = certificate();
    let server = start(dir.path(), &pair, 5_000);
    let ca = dir.path().join("cert.pem");
    let ca = ca.to_str().unwrap();
    let base = server.base.as_str();

    run_ok(
        &[
            "agent",
            "logs",
            "--url",
            base,
            "--api-key",
            KEY,
            "--ca-cert",
            ca,
            "--service",
            "edge",
            "--batch-size",
            "1",
            "--flush-interval",
            "0.1",
        ],
        "ERROR: over https\n",
    );
    run_ok(
        &["stats", "--url", base, "--api-key", KEY, "--ca-cert", ca],
        "",
    );
    let top = run_ok(
        &[
            "top",
            "--once",
            "--url",
            base,
            "--api-key",
            KEY,
            "--ca-cert",
            ca,
        ],
        "",
    );
    let shown = String::from_utf8_lossy(&top.stdout);
    assert!(shown.contains("logs_received=1"), "{shown}");
    // Without the certificate the server is not trusted: a clear failure.
    let untrusted = tokio::task::block_in_place(|| {
        run(&["top", "--once", "--url", base, "--api-key", KEY], "")
    });
    assert_eq!(untrusted.status.code(), Some(1));
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
