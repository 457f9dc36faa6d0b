//! Framing of one stored batch, and of its index entry.
//!
//! ```text
//! record:  "EQ" | version u8 | flags u8 | crc32c u32 LE | payload
//!          version 1: payload = bincode-2 (standard config) of model::Batch
//!          version 2: payload = bincode-2 of (Origin, model::Batch) — a batch
//!                     replayed from the dead letters, which keeps the
//!                     ingest-ids its entries were first sent with
//!          the payload is zstd-compressed when flags bit 0 is set;
//!          crc32c covers the payload bytes as stored
//! index:   version u8 = 1 | kind u8 | entries u32 LE | record bytes u32 LE
//!          | enqueued_at unix ms u64 LE
//! ```
//!
//! The bincode configuration is fixed here (`standard()`), so a crate upgrade
//! cannot silently change the bytes; a change of format bumps the version.

use std::cell::RefCell;

use bincode::BorrowDecode;

use crate::model::{Batch, Kind};

const MAGIC: [u8; 2] = *b"EQ";
const VERSION: u8 = 1;
const VERSION_WITH_ORIGIN: u8 = 2;
const INDEX_VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 1;
const HEADER_LEN: usize = 8;
/// NOTE: level 1 measured at ~5x smaller records than raw bincode for varied
/// log batches, at a fraction of the JSON parse cost; sled rewrites every byte
/// several times, so smaller records mean less flash wear and faster commits.
const ZSTD_LEVEL: i32 = 1;
/// Refuse to inflate a stored payload beyond this: a corrupt length must not
/// become an allocation of gigabytes.
const MAX_DECODED_BYTES: usize = 256 * 1024 * 1024;

/// Why a stored record cannot be turned back into a batch. Never retriable:
/// the bytes on disk are what they are; the record goes to the dead letters.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("record does not start with the queue magic")]
    BadMagic,
    #[error("record format version {0} is not known to this build")]
    UnknownVersion(u8),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record payload cannot be decompressed: {0}")]
    Decompress(std::io::Error),
    #[error("record payload cannot be decoded: {0}")]
    Decode(String),
}

/// NOTE: bincode sizes a `Vec` from the length prefix it reads
/// (`Vec::with_capacity(len)`) and checks it against nothing unless a limit
/// is set, so a damaged record whose checksum still matched could ask for
/// terabytes and abort the process — at every restart, as the record is read
/// again. The limit bounds what one record may claim; the encoded bytes are
/// the same with or without it.
fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODED_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_DECODED_BYTES>()
}

/// Where the `ingest-id`s of a stored batch come from when they are not its
/// own `<node_id>:<seq>:<index>`: entries replayed from the dead letters keep
/// the ids they were first sent with, so consumers can still de-duplicate
/// them (SPEC §4). `indices[i]` is the original index of entry `i`.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Origin {
    pub node_id: String,
    pub seq: u64,
    pub indices: Vec<u32>,
}

/// Encodes a batch for the queue. Infallible for any `Batch` in memory;
/// the bytes are the same whether its strings are owned or borrowed.
pub fn encode<S: bincode::Encode>(batch: &Batch<S>) -> Vec<u8> {
    frame(VERSION, |raw| {
        bincode::encode_into_std_write(batch, raw, bincode_config())
    })
}

/// Encodes a batch that keeps the ingest-ids of `origin` (a replay).
pub fn encode_with_origin(batch: &Batch, origin: &Origin) -> Vec<u8> {
    frame(VERSION_WITH_ORIGIN, |raw| {
        bincode::encode_into_std_write((origin, batch), raw, bincode_config())
    })
}

/// A thread's scratch buffers above this size are given back after use.
const SCRATCH_KEPT: usize = 1 << 20;

thread_local! {
    /// NOTE: a zstd context is ~1 MB of tables to set up; one per record
    /// was 2.3% of W1's CPU (`ZSTD_createCCtx`) and 3.6% of the drain's
    /// (`ZSTD_createDCtx` plus a stream buffer). One per thread, reused.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    /// The bincode bytes of a record before compression, and the inflated
    /// bytes of one being decoded. NOTE: a fresh `Vec` per record grew by
    /// doubling (memmove, ~6% of W1) to tens of KB; reused, W1 took ~5% more
    /// entries/s (three interleaved pairs).
    static RAW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer, emptied.
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    RAW.with_borrow_mut(|raw| {
        raw.clear();
        let out = f(raw);
        if raw.capacity() > SCRATCH_KEPT {
            *raw = Vec::new();
        }
        out
    })
}

/// zstd at `ZSTD_LEVEL` with this thread's context.
fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        c.compress(raw)
    })
}

fn frame(
    version: u8,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<usize, bincode::error::EncodeError>,
) -> Vec<u8> {
    with_scratch(|raw| {
        encode(raw).expect("encoding into a Vec cannot fail");
        let compressed = compress(raw).ok().filter(|c| c.len() < raw.len());
        let (flags, payload) = match &compressed {
            Some(c) => (FLAG_ZSTD, &c[..]),
            None => (0, &raw[..]),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(version);
        out.push(flags);
        out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    })
}

/// Decodes a stored record, checking magic, version and checksum first.
pub fn decode(bytes: &[u8]) -> Result<Batch, RecordError> {
    decode_with_origin(bytes).map(|(batch, _)| batch)
}

/// Decodes a stored record and, for a replayed batch, its `Origin`.
pub fn decode_with_origin(bytes: &[u8]) -> Result<(Batch, Option<Origin>), RecordError> {
    with_payload(bytes, |version, raw| decode_payload::<String>(version, raw))
}

/// Decodes a stored record with its strings borrowed from the record's
/// bytes, and hands it to `f`. NOTE: the drain only renders a batch into
/// Kafka messages; decoding it into owned strings first was ~6 allocations
/// per entry, freed right after rendering (bincode decode plus malloc/free
/// were a quarter of the drain's CPU). `f` runs while this thread's scratch
/// buffer holds the inflated bytes: it must not encode or decode another
/// record (that would borrow the buffer twice and panic).
pub fn decode_view<T>(
    bytes: &[u8],
    f: impl FnOnce(Batch<&str>, Option<Origin>) -> T,
) -> Result<T, RecordError> {
    with_payload(bytes, |version, raw| {
        decode_payload::<&str>(version, raw).map(|(batch, origin)| f(batch, origin))
    })
}

/// Checks magic, version and checksum, inflates the payload into this
/// thread's scratch buffer if it is compressed, and runs `f` on it.
fn with_payload<T>(
    bytes: &[u8],
    f: impl FnOnce(u8, &[u8]) -> Result<T, RecordError>,
) -> Result<T, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0..2] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let version = bytes[2];
    if version != VERSION && version != VERSION_WITH_ORIGIN {
        return Err(RecordError::UnknownVersion(version));
    }
    let flags = bytes[3];
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    if flags & FLAG_ZSTD == 0 {
        return f(version, payload);
    }
    with_scratch(|inflated| {
        inflate(payload, inflated)?;
        f(version, inflated)
    })
}

fn decode_payload<'a, S>(
    version: u8,
    raw: &'a [u8],
) -> Result<(Batch<S>, Option<Origin>), RecordError>
where
    S: AsRef<str> + BorrowDecode<'a, ()>,
{
    let decode_err = |e: bincode::error::DecodeError| RecordError::Decode(e.to_string());
    if version == VERSION {
        let (batch, _) =
            bincode::borrow_decode_from_slice(raw, bincode_config()).map_err(decode_err)?;
        return Ok((batch, None));
    }
    let ((origin, batch), _): ((Origin, Batch<S>), _) =
        bincode::borrow_decode_from_slice(raw, bincode_config()).map_err(decode_err)?;
    if origin.indices.len() != batch.len() {
        return Err(RecordError::Decode(format!(
            "origin names {} entries, the batch holds {}",
            origin.indices.len(),
            batch.len()
        )));
    }
    Ok((batch, Some(origin)))
}

/// Inflates a stored payload, never beyond `MAX_DECODED_BYTES`. Our frames
/// state their size, so they inflate in one call with this thread's
/// context; a payload that states none, or holds several frames (never
/// written by us), is streamed.
fn inflate(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n <= MAX_DECODED_BYTES as u64 => {
            out.reserve(n as usize);
            let inflated = DECOMPRESSOR.with_borrow_mut(|d| {
                let d = match d {
                    Some(d) => d,
                    None => {
                        d.insert(zstd::bulk::Decompressor::new().map_err(RecordError::Decompress)?)
                    }
                };
                // A frame that inflates beyond the buffer fails here
                // ("destination buffer too small").
                d.decompress_to_buffer(payload, out)
                    .map_err(RecordError::Decompress)
            });
            // Several frames, or a skippable frame first: the first frame's
            // size is not the payload's, and the buffer (whatever capacity it
            // had left) may be too small. The streaming decoder takes them
            // (and still fails a frame that lies about its size).
            if inflated.is_err() {
                *out = decompress_streaming(payload)?;
            }
            Ok(())
        }
        Ok(Some(_)) => Err(RecordError::Decode(
            "payload inflates beyond 256 MiB".into(),
        )),
        _ => {
            *out = decompress_streaming(payload)?;
            Ok(())
        }
    }
}

fn decompress_streaming(payload: &[u8]) -> Result<Vec<u8>, RecordError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(payload).map_err(RecordError::Decompress)?;
    let mut out = Vec::with_capacity(payload.len() * 4);
    decoder
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(RecordError::Decompress)?;
    if out.len() > MAX_DECODED_BYTES {
        return Err(RecordError::Decode(
            "payload inflates beyond 256 MiB".into(),
        ));
    }
    Ok(out)
}

/// What the queue knows of a batch without reading its record: enough for
/// depth, entries, bytes and oldest age after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub kind: Kind,
    pub entries: u32,
    pub record_bytes: u32,
    pub enqueued_at_ms: u64,
}

const INDEX_LEN: usize = 18;

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_LEN] {
        let mut out = [0u8; INDEX_LEN];
        out[0] = INDEX_VERSION;
        out[1] = match self.kind {
            Kind::Logs => 0,
            Kind::Metrics => 1,
        };
        out[2..6].copy_from_slice(&self.entries.to_le_bytes());
        out[6..10].copy_from_slice(&self.record_bytes.to_le_bytes());
        out[10..18].copy_from_slice(&self.enqueued_at_ms.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        if bytes.len() != INDEX_LEN || bytes[0] != INDEX_VERSION {
            return None;
        }
        let kind = match bytes[1] {
            0 => Kind::Logs,
            1 => Kind::Metrics,
            _ => return None,
        };
        Some(IndexEntry {
            kind,
            entries: u32::from_le_bytes(bytes[2..6].try_into().ok()?),
            record_bytes: u32::from_le_bytes(bytes[6..10].try_into().ok()?),
            enqueued_at_ms: u64::from_le_bytes(bytes[10..18].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, Entries, Level, LogRecord};

    fn sample() -> Batch {
        Batch {
            received_at: "2024-01-01T00:00:00Z".into(),
            agent_version: Some("0.1.0".into()),
            entries: Entries::Logs(
                (0..50)
                    .map(|i| LogRecord {
                        timestamp: "2024-01-01T00:00:00Z".into(),
                        level: Level::Info,
                        message: format!("request {i} served"),
                        service: "api".into(),
                        host: "edge-1".into(),
                        attributes: vec![("n".into(), AttrValue::Int(i))],
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_replayed_batch_keeps_its_origin_and_a_mismatched_one_is_refused() {
        let b = sample();
        let origin = Origin {
            node_id: "edge-1".into(),
            seq: 42,
            indices: (100..150).collect(),
        };
        let r = encode_with_origin(&b, &origin);
        assert_eq!(
            decode_with_origin(&r).unwrap(),
            (b.clone(), Some(origin.clone()))
        );
        assert_eq!(decode(&r).unwrap(), b);
        assert_eq!(decode_with_origin(&encode(&b)).unwrap(), (b.clone(), None));
        let short = Origin {
            indices: vec![1],
            ..origin
        };
        assert!(matches!(
            decode_with_origin(&encode_with_origin(&b, &short)),
            Err(RecordError::Decode(_))
        ));
    }

    /// The drain decodes with borrowed strings: it must see the very batch
    /// the owned decode sees, for both record versions and every value type.
    #[test]
    fn a_borrowed_view_sees_the_same_batch_as_the_owned_decode() {
        use crate::model::{MetricRecord, MetricType};
        let metrics: Batch = Batch {
            received_at: "2024-01-01T00:00:01Z".into(),
            agent_version: None,
            entries: Entries::Metrics(vec![
                MetricRecord {
                    timestamp: "2024-01-01T00:00:00Z".into(),
                    name: "cpu".into(),
                    value: 0.25,
                    metric_type: MetricType::Gauge,
                    service: "api".into(),
                    host: "h".into(),
                    unit: Some("ratio".into()),
                    attributes: vec![
                        ("b".into(), AttrValue::Bool(true)),
                        ("f".into(), AttrValue::Float(1.5)),
                        ("s".into(), AttrValue::Str("x".into())),
                        ("u".into(), AttrValue::UInt(u64::MAX)),
                    ],
                },
                MetricRecord {
                    timestamp: "2024-01-01T00:00:00Z".into(),
                    name: "requests".into(),
                    value: 3.0,
                    metric_type: MetricType::Counter,
                    service: "api".into(),
                    host: "h".into(),
                    unit: None,
                    attributes: vec![],
                },
            ]),
        };
        let origin = Origin {
            node_id: "edge-1".into(),
            seq: 42,
            indices: (100..150).collect(),
        };
        for record in [
            encode(&sample()),
            encode(&metrics),
            encode_with_origin(&sample(), &origin),
        ] {
            let owned = decode_with_origin(&record).unwrap();
            let viewed = decode_view(&record, |b, o| (format!("{b:?}"), o)).unwrap();
            assert_eq!(viewed, (format!("{:?}", owned.0), owned.1));
        }
        let mut damaged = encode(&sample());
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            decode_view(&damaged, |_, _| ()),
            Err(RecordError::Checksum { .. })
        ));
    }

    /// Found by `fuzz/` (record target, checksum-valid mode) in under a
    /// thousand runs: "memory allocation of 1000109575843765 bytes failed",
    /// an abort. A damaged length prefix must be an error instead.
    #[test]
    fn a_huge_length_prefix_under_a_valid_checksum_is_an_error() {
        let mut payload = vec![253u8]; // bincode varint: a u64 follows
        payload.extend_from_slice(&(1u64 << 50).to_le_bytes());
        payload.extend_from_slice(b"tail");
        let mut r = vec![b'E', b'Q', VERSION, 0];
        r.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        r.extend_from_slice(&payload);
        assert!(matches!(decode(&r), Err(RecordError::Decode(_))));
    }

    #[test]
    fn round_trips_and_compresses() {
        let b = sample();
        let bytes = encode(&b);
        assert_eq!(bytes[3] & FLAG_ZSTD, FLAG_ZSTD);
        assert_eq!(decode(&bytes).unwrap(), b);
    }

    /// Our frames state their size and inflate with the thread's context;
    /// a frame written by a streaming encoder states none and is streamed.
    #[test]
    fn frames_with_and_without_a_stated_size_both_decode() {
        let b = sample();
        let bytes = encode(&b);
        let stated = zstd::zstd_safe::get_frame_content_size(&bytes[HEADER_LEN..]);
        assert!(matches!(stated, Ok(Some(_))), "{stated:?}");
        let raw = bincode::encode_to_vec(&b, bincode_config()).unwrap();
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        let payload = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&payload).ok(),
            Some(None)
        );
        let mut r = vec![b'E', b'Q', VERSION, FLAG_ZSTD];
        r.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        r.extend_from_slice(&payload);
        assert_eq!(decode(&r).unwrap(), b);
        // Two frames, the first stating only its own size: streamed too.
        let half = raw.len() / 2;
        let mut two = zstd::bulk::compress(&raw[..half], 1).unwrap();
        two.extend(zstd::bulk::compress(&raw[half..], 1).unwrap());
        let mut r = vec![b'E', b'Q', VERSION, FLAG_ZSTD];
        r.extend_from_slice(&crc32c::crc32c(&two).to_le_bytes());
        r.extend_from_slice(&two);
        assert_eq!(decode(&r).unwrap(), b);
        // And the reused contexts give the same answers again.
        assert_eq!(decode(&bytes).unwrap(), b);
        assert_eq!(encode(&b), bytes);
    }

    #[test]
    fn any_flipped_payload_byte_is_detected() {
        let bytes = encode(&sample());
        for i in HEADER_LEN..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_and_garbage_are_errors_not_panics() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
        assert!(matches!(
            decode(b"XX\x01\x00\0\0\0\0"),
            Err(RecordError::BadMagic)
        ));
    }

    #[test]
    fn index_entry_round_trips() {
        let e = IndexEntry {
            kind: Kind::Metrics,
            entries: 7,
            record_bytes: 1234,
            enqueued_at_ms: 1_700_000_000_000,
        };
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(IndexEntry::decode(&[0; 3]), None);
    }
}
