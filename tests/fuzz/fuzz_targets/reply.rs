//! Fuzz target: any bytes, in any chunking, give the same extraction as the whole buffer,
//! and rendering never panics. The first byte picks the chunk size.
#![no_main]

use chatops_core::reply::{extract, Extractor, Outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = extract(data);
    if let Outcome::Reply(r) = &whole.outcome {
        let _ = r.to_text();
    }
    if let Some((&k, _)) = data.split_first() {
        let size = 1 + usize::from(k % 64);
        let mut x = Extractor::new();
        for chunk in data.chunks(size) {
            x.push(chunk);
        }
        assert_eq!(x.finish(), whole, "chunks of {size}");
    }
});
