//! Reading a request body under a size limit, on the wire and inflated.
//!
//! NOTE: poem's `SizeLimit` only reads Content-Length and its `Compression`
//! matches encodings case-sensitively and passes unknown ones through
//! (NOTES.md), so neither is used: this module reads the body itself, limits
//! the bytes read (chunked bodies included), and inflates gzip or zstd with
//! the same limit on the output, so a zip bomb costs at most the limit.

use std::io::Read;
use std::marker::PhantomData;

use poem::{Body, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use futures::StreamExt;

use super::budget::{Budget, Held};
use super::error::Rejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// The raw body and the headers that say how to read it, taken without
/// reading, so auth and the rate limit run before any byte is parsed.
pub struct RawBody {
    body: Body,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_length: Option<u64>,
    user_agent: Option<String>,
}

impl RawBody {
    pub fn take(req: &Request, body: &mut RequestBody) -> RawBody {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        RawBody {
            body: body.take().unwrap_or_else(|_| Body::empty()),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            user_agent: header("user-agent"),
        }
    }

    /// The media type without parameters, lower-case.
    pub fn media_type(&self) -> Option<String> {
        self.content_type.as_deref().map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// Reads under the configured size limit, in-flight budget and request
    /// timeout; the body comes with its share of the budget. `accept` lists
    /// the media types the endpoint takes.
    pub async fn read_with(
        self,
        state: &super::AppState,
        accept: &[&str],
    ) -> Result<(Vec<u8>, Held), Rejection> {
        let timeout = std::time::Duration::from_millis(state.config.server.request_timeout_ms);
        let mut held = Held::default();
        let limit = state.config.server.max_body_bytes;
        let read = self.read(accept, limit, &state.inflight, &mut held);
        let bytes = tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(Rejection::Timeout))?;
        Ok((bytes, held))
    }

    /// Checks the headers, then reads and inflates the body: at most `limit`
    /// bytes on the wire and at most `limit` bytes after decompression, every
    /// byte taken from `budget` into `held` as it arrives.
    async fn read(
        self,
        accept: &[&str],
        limit: u64,
        budget: &Budget,
        held: &mut Held,
    ) -> Result<Vec<u8>, Rejection> {
        check_content_type(self.content_type.as_deref(), accept)?;
        let encoding = parse_encoding(self.content_encoding.as_deref())?;
        let too_large = Rejection::TooLarge {
            limit,
            decompressed: false,
        };
        if self.content_length.is_some_and(|n| n > limit) {
            return Err(too_large);
        }
        let mut wire = Vec::with_capacity(self.content_length.unwrap_or(0) as usize);
        let mut chunks = self.body.into_bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|e| Rejection::MalformedJson(format!("cannot read body: {e}")))?;
            if (wire.len() + chunk.len()) as u64 > limit {
                return Err(too_large);
            }
            budget.take(held, chunk.len())?;
            wire.extend_from_slice(&chunk);
        }
        if encoding == Encoding::Identity {
            return Ok(wire);
        }
        // NOTE: inflating runs on the request's worker thread without
        // yielding, so at most one body per worker is inflated before its
        // size is taken from the budget.
        let inflated = inflate_body(&wire, encoding, limit)?;
        budget.take(held, inflated.len())?;
        Ok(inflated)
    }
}

/// A request body as an endpoint documents it: `K` says which media types
/// it reads, `T` names the JSON schema shown in the OpenAPI document.
pub struct TypedBody<T, K> {
    pub raw: RawBody,
    _schema: PhantomData<fn() -> (T, K)>,
}

/// The media types of a `TypedBody`, for the OpenAPI document.
pub trait MediaTypes {
    const DESCRIPTION: &'static str;
    fn content(json_schema: MetaSchemaRef) -> Vec<MetaMediaType>;
}

/// `POST /logs`, `POST /metrics`: JSON.
pub struct JsonOnly;

impl MediaTypes for JsonOnly {
    const DESCRIPTION: &'static str = "JSON batch; Content-Encoding gzip or zstd accepted. \
         max_body_bytes applies before and after decompression.";
    fn content(json_schema: MetaSchemaRef) -> Vec<MetaMediaType> {
        vec![MetaMediaType {
            content_type: "application/json",
            schema: json_schema,
        }]
    }
}

pub type JsonBody<T> = TypedBody<T, JsonOnly>;

impl<'a, T: Type, K: MediaTypes> ApiExtractor<'a> for TypedBody<T, K> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(K::DESCRIPTION),
            content: K::content(T::schema_ref()),
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(TypedBody {
            raw: RawBody::take(req, body),
            _schema: PhantomData,
        })
    }
}

/// The bytes of a body as received, with its `Content-Encoding`, turned into
/// the JSON to parse: at most `limit` bytes after decompression. Public for
/// the fuzz target over the request path (`fuzz/`).
pub fn decode(
    wire: &[u8],
    content_encoding: Option<&str>,
    limit: u64,
) -> Result<Vec<u8>, Rejection> {
    if wire.len() as u64 > limit {
        return Err(Rejection::TooLarge {
            limit,
            decompressed: false,
        });
    }
    inflate_body(wire, parse_encoding(content_encoding)?, limit)
}

fn inflate_body(wire: &[u8], encoding: Encoding, limit: u64) -> Result<Vec<u8>, Rejection> {
    match encoding {
        Encoding::Identity => Ok(wire.to_vec()),
        Encoding::Gzip => inflate(flate2::read::MultiGzDecoder::new(wire), limit, "gzip"),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(wire)
                .map_err(|e| Rejection::MalformedJson(format!("bad zstd body: {e}")))?;
            inflate(decoder, limit, "zstd")
        }
    }
}

fn check_content_type(ct: Option<&str>, accept: &[&str]) -> Result<(), Rejection> {
    let send = accept.join(" or ");
    let Some(ct) = ct else {
        return Err(Rejection::UnsupportedMediaType(format!(
            "Missing Content-Type: send {send}"
        )));
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if accept.iter().any(|a| essence.eq_ignore_ascii_case(a)) {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType(format!(
            "Unsupported Content-Type `{essence}`: send {send}"
        )))
    }
}

/// Case-insensitive (RFC 9110); one coding at most.
fn parse_encoding(value: Option<&str>) -> Result<Encoding, Rejection> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Encoding::Identity);
    };
    if v.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else if v.eq_ignore_ascii_case("zstd") {
        Ok(Encoding::Zstd)
    } else {
        Err(Rejection::UnsupportedMediaType(format!(
            "Unsupported Content-Encoding `{v}`: use identity, gzip or zstd"
        )))
    }
}

fn inflate(reader: impl Read, limit: u64, name: &str) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Rejection::MalformedJson(format!("bad {name} body: {e}")))?;
    if out.len() as u64 > limit {
        return Err(Rejection::TooLarge {
            limit,
            decompressed: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_case_insensitive_and_unknown_ones_refused() {
        assert_eq!(parse_encoding(Some("GZIP")).unwrap(), Encoding::Gzip);
        assert_eq!(parse_encoding(Some("Zstd")).unwrap(), Encoding::Zstd);
        assert_eq!(parse_encoding(None).unwrap(), Encoding::Identity);
        assert!(matches!(
            parse_encoding(Some("br")),
            Err(Rejection::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn content_type_allows_parameters_and_case() {
        let json = &["application/json"];
        assert!(check_content_type(Some("Application/JSON; charset=utf-8"), json).is_ok());
        assert!(check_content_type(Some("text/plain"), json).is_err());
        assert!(check_content_type(None, json).is_err());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 8 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        let got = inflate(
            flate2::read::MultiGzDecoder::new(&bomb[..]),
            1 << 20,
            "gzip",
        );
        assert!(matches!(
            got,
            Err(Rejection::TooLarge {
                decompressed: true,
                ..
            })
        ));
    }
}
