//! Record decoding from arbitrary bytes: what the forwarder does with
//! whatever a damaged disk hands back. Must never panic, abort or allocate
//! without bound; anything it accepts must encode and decode to the same
//! bytes.
//!
//! The first byte picks the mode: raw bytes as stored (the checksum rejects
//! nearly all of them), or the rest as flags + payload under a valid header
//! and a matching checksum — damage the checksum cannot see, which is what
//! reaches decompression and bincode.
#![no_main]

use edge_ingester::queue::{decode_record, encode_record};
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
        let mut r = vec![b'E', b'Q', 1, flags];
        r.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        r.extend_from_slice(payload);
        r
    };
    if let Ok(batch) = decode_record(&record) {
        // Compared as bytes: damaged input can decode to a NaN metric value,
        // which no batch equals, itself included.
        let encoded = encode_record(&batch);
        let again = decode_record(&encoded).expect("re-encoded record decodes");
        assert_eq!(encode_record(&again), encoded, "record round trip changed the batch");
    }
});
