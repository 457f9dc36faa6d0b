//! Reading a JSON request body under a size limit, on the wire and inflated.
//!
//! NOTE: poem's `SizeLimit` only reads Content-Length and its `Compression`
//! matches encodings case-sensitively and passes unknown ones through
//! (NOTES.md), so neither is used: this module reads the body itself, limits
//! the bytes read (chunked bodies included), and inflates gzip or zstd with
//! the same limit on the output, so a zip bomb costs at most the limit.

use std::io::Read;
use std::marker::PhantomData;

use poem::{Body, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
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
/// reading, so auth and the rate limit run before any byte is parsed. `T`
/// only names the schema shown in the OpenAPI document.
pub struct JsonBody<T> {
    body: Body,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_length: Option<u64>,
    _schema: PhantomData<fn() -> T>,
}

impl<'a, T: Type> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "JSON batch; Content-Encoding gzip or zstd accepted. \
                 max_body_bytes applies before and after decompression.",
            ),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Ok(JsonBody {
            body: body.take().unwrap_or_else(|_| Body::empty()),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            _schema: PhantomData,
        })
    }
}

impl<T> JsonBody<T> {
    /// Checks the headers, then reads and inflates the body: at most `limit`
    /// bytes on the wire and at most `limit` bytes after decompression, every
    /// byte taken from `budget` into `held` as it arrives.
    pub async fn read(
        self,
        limit: u64,
        budget: &Budget,
        held: &mut Held,
    ) -> Result<Vec<u8>, Rejection> {
        check_content_type(self.content_type.as_deref())?;
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
        let json = inflate_body(&wire, encoding, limit)?;
        budget.take(held, json.len())?;
        Ok(json)
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

fn check_content_type(ct: Option<&str>) -> Result<(), Rejection> {
    let Some(ct) = ct else {
        return Err(Rejection::UnsupportedMediaType(
            "Missing Content-Type: send application/json".into(),
        ));
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType(format!(
            "Unsupported Content-Type `{essence}`: send application/json"
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
        assert!(check_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
        assert!(check_content_type(Some("text/plain")).is_err());
        assert!(check_content_type(None).is_err());
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
