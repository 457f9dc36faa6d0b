//! API keys: who may post, compared in constant time, never logged.
//!
//! Every configured key is kept only as its SHA-256 digest. A presented key is
//! hashed and compared against every digest with `subtle`, without an early
//! exit, so neither the length nor the position of a matching key leaks
//! through timing.

use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::SecurityScheme;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rate_limit::KeyDigest;
use super::AppState;

pub struct KeyRing {
    digests: Vec<KeyDigest>,
}

impl KeyRing {
    /// `keys` are plain or `sha256:<hex>`; validated by `Config::validate`.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyRing {
        let mut digests: Vec<KeyDigest> = keys
            .into_iter()
            .filter_map(|k| match k.strip_prefix("sha256:") {
                Some(hex_digest) => hex::decode(hex_digest).ok()?.try_into().ok(),
                None => Some(Sha256::digest(k.as_bytes()).into()),
            })
            .collect();
        // The same key written twice (plain and hashed) is one caller.
        digests.sort_unstable();
        digests.dedup();
        KeyRing { digests }
    }

    /// The matching key's digest (its rate-limit bucket), if any.
    pub fn identify(&self, presented: &str) -> Option<KeyDigest> {
        let digest: KeyDigest = Sha256::digest(presented.as_bytes()).into();
        let mut found = false;
        for d in &self.digests {
            found |= bool::from(d.ct_eq(&digest));
        }
        found.then_some(digest)
    }

    pub fn digests(&self) -> &[KeyDigest] {
        &self.digests
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// A key was presented; `key` is `None` when it matched no configured key.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub key: Option<KeyDigest>,
}

async fn check_api_key(req: &Request, key: ApiKey) -> Option<Caller> {
    let state = req.data::<std::sync::Arc<AppState>>()?;
    Some(Caller {
        key: state.access.load().keys.identify(&key.key),
    })
}

async fn check_bearer(req: &Request, bearer: Bearer) -> Option<Caller> {
    let state = req.data::<std::sync::Arc<AppState>>()?;
    Some(Caller {
        key: state.access.load().keys.identify(&bearer.token),
    })
}

/// `X-API-Key: KEY`.
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKeyHeader",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_api_key"
)]
pub struct ApiKeyAuth(Caller);

/// `Authorization: Bearer KEY`.
#[derive(SecurityScheme)]
#[oai(rename = "BearerKey", ty = "bearer", checker = "check_bearer")]
pub struct BearerAuth(Caller);

/// Either header; `Missing` when neither was sent.
#[derive(SecurityScheme)]
pub enum Auth {
    ApiKey(ApiKeyAuth),
    Bearer(BearerAuth),
    #[oai(fallback)]
    Missing,
}

impl Auth {
    /// The caller's key, or the 401 to answer.
    pub fn key(&self) -> Result<KeyDigest, super::error::Rejection> {
        use super::error::Rejection;
        let caller = match self {
            Auth::ApiKey(ApiKeyAuth(c)) | Auth::Bearer(BearerAuth(c)) => c,
            Auth::Missing => return Err(Rejection::MissingKey),
        };
        caller.key.ok_or(Rejection::InvalidKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys_both_match() {
        let hashed = format!("sha256:{}", hex::encode(Sha256::digest(b"second")));
        let ring = KeyRing::new(["first", hashed.as_str()]);
        let first: KeyDigest = Sha256::digest(b"first").into();
        let second: KeyDigest = Sha256::digest(b"second").into();
        assert_eq!(ring.identify("first"), Some(first));
        assert_eq!(ring.identify("second"), Some(second));
        assert_eq!(ring.identify("firs"), None);
        assert_eq!(ring.identify(""), None);
    }
}
