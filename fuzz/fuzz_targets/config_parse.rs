//! `trellis_config::parse` on any UTF-8 text: it returns a configuration or the list of problems, never
//! panics; every problem names the file (every line of the error as `trellis check` prints it starts
//! with `FILE:`), lines are within the text and in file order; and parsing is deterministic.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    trellis_fuzz::parse_checked(text);
    Corpus::Keep
});
