//! The `native` payload decoder, through `Sources::decode` as ingest calls it. Input: one
//! message per line, `TOPIC-SUFFIX<TAB>PAYLOAD` (topic `estate/31011500000000000001/` + suffix) or just a
//! payload (the format's usual topic); see `estate_fuzz::messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate_fuzz::sources(estate_fuzz::Format::Native, data));
