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

use super::AppState;

pub struct KeyRing {
    digests: Vec<[u8; 32]>,
}

impl KeyRing {
    /// `keys` are plain or `sha256:<hex>`; validated by `Config::validate`.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyRing {
        let digests = keys
            .into_iter()
            .filter_map(|k| match k.strip_prefix("sha256:") {
                Some(hex_digest) => hex::decode(hex_digest).ok()?.try_into().ok(),
                None => Some(Sha256::digest(k.as_bytes()).into()),
            })
            .collect();
        KeyRing { digests }
    }

    /// The index of the matching key (its rate-limit bucket), if any.
    pub fn identify(&self, presented: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, d) in self.digests.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// The digest of key `index`: identifies the caller without the secret.
    pub fn digest(&self, index: usize) -> [u8; 32] {
        self.digests.get(index).copied().unwrap_or([0; 32])
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// A key was presented; `key` is `None` when it matched no configured key.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub key: Option<usize>,
}

async fn check_api_key(req: &Request, key: ApiKey) -> Option<Caller> {
    let state = req.data::<std::sync::Arc<AppState>>()?;
    Some(Caller {
        key: state.keys.identify(&key.key),
    })
}

async fn check_bearer(req: &Request, bearer: Bearer) -> Option<Caller> {
    let state = req.data::<std::sync::Arc<AppState>>()?;
    Some(Caller {
        key: state.keys.identify(&bearer.token),
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
    /// The caller's key index, or the 401 to answer.
    pub fn key(&self) -> Result<usize, super::error::Rejection> {
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
        assert_eq!(ring.identify("first"), Some(0));
        assert_eq!(ring.identify("second"), Some(1));
        assert_eq!(ring.identify("firs"), None);
        assert_eq!(ring.identify(""), None);
    }
}
