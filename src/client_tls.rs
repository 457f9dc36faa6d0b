//! HTTPS for our own clients (`stats`, `top`, the agents): a server with
//! `[server.tls]` speaks nothing else, so they must be able to reach it.
//!
//! They trust the system's certificate store and, with `--ca-cert`, the
//! PEM certificates in that file — what a self-signed edge certificate needs.

use std::path::Path;

/// A client builder that speaks HTTPS, trusting `ca_cert` besides the
/// system store. The error names the file.
pub fn builder(ca_cert: Option<&Path>) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| format!("--ca-cert {}: cannot read: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-cert {}: no PEM certificate in it",
                path.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}
