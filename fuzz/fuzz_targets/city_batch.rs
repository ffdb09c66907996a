//! `EventBatch` decoding and accounting in the reference city subscriber
//! (`estate_sim::city::Ledger`, behind `estate-sim city`); see `estate_fuzz::city`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate_fuzz::city::batches(data));
