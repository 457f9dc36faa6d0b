//! Record decoding from arbitrary bytes: what the forwarder does with
//! whatever a damaged disk hands back. Must never panic, abort or allocate
//! without bound; anything it accepts must encode and decode to the same
//! bytes.
//!
//! The first byte picks the mode: raw bytes as stored (the checksum rejects
//! nearly all of them), or the rest as flags + payload under a valid header
//! and a matching checksum — damage the checksum cannot see, which is what
//! reaches decompression and bincode. Bit 1 picks the header's version: 1, or
//! 2 (a batch replayed from the dead letters, with its `Origin`), whose
//! ingest-ids are all rendered. The drain's borrowed decode must accept
//! whatever the owned one accepts, and render the same messages, and refuse
//! what it refuses — except a record over the 256 MiB limit: bincode
//! charges each `Vec` by the size of its in-memory elements, and borrowed
//! entries are smaller.
#![no_main]

use edge_ingester::queue::{
    decode_record_view, decode_record_with_origin, encode_record, encode_record_with_origin, Stored,
};
use edge_ingester::sink::message::{render, Rendered};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let record = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Some((&flags, payload)) = rest.split_first() else {
            return;
        };
        let version = if mode & 2 == 0 { 1 } else { 2 };
        let mut r = vec![b'E', b'Q', version, flags];
        r.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        r.extend_from_slice(payload);
        r
    };
    let messages = |r: &Rendered| -> Vec<(String, Vec<u8>, String)> {
        r.iter()
            .map(|m| (m.key.to_string(), m.value.to_vec(), m.ingest_id.to_string()))
            .collect()
    };
    let viewed = decode_record_view(&record, |batch, origin| {
        messages(&render(
            &Stored {
                seq: 1,
                batch,
                origin,
            },
            "node",
        ))
    });
    let owned = decode_record_with_origin(&record);
    if let Err(e) = &owned {
        let limit = e.to_string().contains("LimitExceeded");
        assert!(
            limit || viewed.is_err(),
            "the borrowed decode took what the owned one refused: {e}"
        );
    }
    if let Ok((batch, origin)) = owned {
        let rendered = render(
            &Stored {
                seq: 1,
                batch: batch.clone(),
                origin: origin.clone(),
            },
            "node",
        );
        let viewed = viewed.expect("the borrowed decode refused what the owned one took");
        assert_eq!(
            viewed,
            messages(&rendered),
            "borrowed decode renders differently"
        );
        // Compared as bytes: damaged input can decode to a NaN metric value,
        // which no batch equals, itself included.
        let encode = |b| match &origin {
            None => encode_record(b),
            Some(o) => encode_record_with_origin(b, o),
        };
        let encoded = encode(&batch);
        let (again, again_origin) =
            decode_record_with_origin(&encoded).expect("re-encoded record decodes");
        assert_eq!(again_origin, origin, "record round trip changed the origin");
        assert_eq!(
            encode(&again),
            encoded,
            "record round trip changed the batch"
        );
        let stored = Stored {
            seq: 1,
            batch: again,
            origin: again_origin,
        };
        for i in 0..stored.batch.len() {
            assert!(!stored.ingest_id("node", i).is_empty());
        }
    }
});
