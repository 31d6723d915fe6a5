//! The `tls_passthrough` ClientHello reader on any bytes a client may send: never a panic; a prefix of
//! the bytes is `Incomplete` or says what the whole does (the reader decides from the bytes it has,
//! in order); once it has decided, more bytes change nothing; a server name is lower-case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_proxy::fuzzing::{client_hello_sni, Hello};

fuzz_target!(|data: &[u8]| {
    let whole = client_hello_sni(data);
    if let Hello::Complete(Some(name)) = &whole {
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    }
    // Every prefix would be quadratic: the first few lengths, the last few, and some in between.
    let n = data.len();
    let cuts = (0..n.min(8))
        .chain(n.saturating_sub(8)..n)
        .chain((1..16).map(|i| n * i / 16));
    for cut in cuts.filter(|c| *c < n) {
        let part = client_hello_sni(&data[..cut]);
        assert!(
            part == Hello::Incomplete || part == whole,
            "{cut} of {n} bytes: {part:?}, the whole: {whole:?}"
        );
    }
    if whole != Hello::Incomplete {
        let mut more = data.to_vec();
        more.extend_from_slice(&[22, 3, 1, 0, 1, 1, 0xff]);
        assert_eq!(
            client_hello_sni(&more),
            whole,
            "more bytes changed a decided answer"
        );
    }
});
