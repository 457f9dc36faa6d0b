//! HTTPS on the listener: rustls with the PEM files of `[server.tls]`.
//!
//! The certificate is read at start-up and again on every SIGHUP; a reload
//! swaps the rustls config that new connections are accepted with, while
//! connections already open keep theirs. HTTP/1.1 and HTTP/2 are offered by
//! ALPN; a client that sends plain HTTP to the port is answered with a plain
//! 400 naming the scheme to use (as nginx does), not left to guess from a
//! reset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client on the HTTPS port is told.
const PLAIN_HTTP_DETAIL: &str =
    r#"{"detail":"this port speaks HTTPS only: use https:// to reach it"}"#;

fn plain_http_refused() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{PLAIN_HTTP_DETAIL}",
        PLAIN_HTTP_DETAIL.len()
    )
}

/// Why the certificate or key cannot be used. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it ({reason})")]
    NoKey { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the certificate and key cannot be used together: {0}")]
    Rejected(#[from] rustls::Error),
}

/// The listener's TLS settings, replaceable while serving.
pub struct Tls {
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    pub fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: ArcSwap::new(server_config(cfg)?),
        })
    }

    /// New connections use `config` from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }

    /// The handshake, or `None` when the client spoke plain HTTP (answered
    /// with a 400) or closed before sending anything.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<Option<TlsStream<TcpStream>>> {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let mut stream = stream;
            stream.write_all(plain_http_refused().as_bytes()).await?;
            let _ = stream.shutdown().await;
            return Ok(None);
        }
        let acceptor = TlsAcceptor::from(self.current.load_full());
        acceptor.accept(stream).await.map(Some)
    }
}

/// Reads and checks the PEM files: what start-up, `check-config` and a
/// reload all go through.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&cfg.cert_path)?;
    let key = read_key(&cfg.key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> TlsConfig {
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
        TlsConfig {
            cert_path: dir.join("c.pem"),
            key_path: dir.join("k.pem"),
        }
    }

    #[test]
    fn a_matching_pair_loads_and_offers_h2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let cfg = server_config(&files(dir.path(), &cert, &key)).unwrap();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let err = server_config(&files(dir.path(), &cert, &other_key)).unwrap_err();
        assert!(matches!(err, TlsError::Rejected(_)), "{err}");
    }

    #[test]
    fn missing_or_empty_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let cfg = files(dir.path(), "", &key);
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("c.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let cfg = files(dir.path(), &cert, "junk");
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("k.pem"), "{err}");
        std::fs::remove_file(dir.path().join("c.pem")).unwrap();
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("c.pem"),
            "{err}"
        );
    }
}
