//! Modbus answers as the poller handles them: `read_data` (answer checked against its
//! request), `decode` (byte/word order, scale) and the `Tracker` (edges, thresholds,
//! reports), for each shipped device profile; see `estate_fuzz::modbus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate_fuzz::modbus::polls(data));
