//! Record decoding from arbitrary bytes: what the forwarder does with
//! whatever a damaged disk hands back. Must never panic or allocate without
//! bound; anything it accepts must encode and decode to the same batch.
#![no_main]

use edge_ingester::queue::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_record(data) {
        let again = decode_record(&encode_record(&batch)).expect("re-encoded record decodes");
        assert_eq!(again, batch);
    }
});
