//! Config loading and validation (`Config::from_toml_str`, what `check-config` and the
//! daemon run) on any text; see `estate_fuzz::settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate_fuzz::settings::check(data));
