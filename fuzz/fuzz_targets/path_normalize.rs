//! `head/path.rs` `normalize`: never panics; what it accepts comes out in normal form (starts with `/`,
//! no dot segment, no doubled slash, no escaped unreserved character, upper-case escapes) and is a
//! fixed point (normalising it again changes nothing); what it refuses is refused for a reason that is
//! in the input (an escape of `/`, `\` or NUL, a raw `\`, a bad escape, a dot segment with parameters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_proxy::fuzzing::{is_normalised, normalize_path, PathError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    match normalize_path(&path) {
        Ok(normalised) => {
            let once = normalised.unwrap_or_else(|| path.clone());
            assert!(is_normalised(&once), "{path:?} -> {once:?}");
            assert_eq!(normalize_path(&once), Ok(None), "{path:?} -> {once:?}");
        }
        Err(PathError::Backslash) => assert!(path.contains('\\')),
        Err(PathError::EncodedSeparator | PathError::Nul | PathError::BadEscape) => {
            assert!(path.contains('%'))
        }
        Err(PathError::DotSegmentParameter) => assert!(path.contains(';')),
        Err(PathError::NotAbsolute) => unreachable!("starts with /"),
    }
});
