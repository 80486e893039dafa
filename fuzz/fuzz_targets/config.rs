//! See `cutover_auditor_fuzz::config` for what this target checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cutover_auditor_fuzz::config(data));
