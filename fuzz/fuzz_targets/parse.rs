//! Fuzz target: any bytes given to the Dockerfile parser return (Ok or Err), never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(df) = kiln::parser::parse_bytes(data) {
        let _ = kiln::parser::dump(&df);
    }
});
