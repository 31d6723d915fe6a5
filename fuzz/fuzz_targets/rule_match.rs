//! Listener rules: `Conditions::compile` + `matches` (via `fuzzing::rule_matches`) agree with a plain
//! model of Lattice's matching on every request; a rule without conditions matches everything; and each
//! `TextMatcher` is consistent: `exact` ⇒ `prefix` ⇒ `contains`, case-sensitive ⇒ case-insensitive, a
//! value matches itself, and case-insensitive matching ignores the request's ASCII case.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trellis_config::{HeaderMatch, Match, PathMatch, StringMatchKind};
use trellis_fuzz::{header_map, rule_model, text_model, MethodIn, Name, Text};
use trellis_proxy::fuzzing::{rule_matches, text_matches};

#[derive(Arbitrary, Debug)]
struct Input {
    method: Option<MethodIn>,
    /// (exact rather than prefix, value, case-sensitive)
    path: Option<(bool, Text, bool)>,
    headers: Vec<(Name, Kind, Text, bool)>,
    requests: Vec<RequestIn>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Contains,
}

impl From<Kind> for StringMatchKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Exact => StringMatchKind::Exact,
            Kind::Prefix => StringMatchKind::Prefix,
            Kind::Contains => StringMatchKind::Contains,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RequestIn {
    method: MethodIn,
    path: Text,
    headers: Vec<(Name, Text)>,
}

const KINDS: [StringMatchKind; 3] = [
    StringMatchKind::Exact,
    StringMatchKind::Prefix,
    StringMatchKind::Contains,
];

/// The properties of one condition's value against one haystack.
fn check_text(value: &str, hay: &[u8]) {
    for cs in [true, false] {
        let [exact, prefix, contains] = KINDS.map(|k| text_matches(k, value, cs, hay));
        assert!(
            !exact || prefix,
            "exact but not prefix: {value:?} {hay:?} cs={cs}"
        );
        assert!(
            !prefix || contains,
            "prefix but not contains: {value:?} {hay:?} cs={cs}"
        );
        for k in KINDS {
            assert!(
                text_matches(k, value, cs, value.as_bytes()),
                "{value:?} does not match itself ({k:?})"
            );
            let got = text_matches(k, value, cs, hay);
            assert_eq!(
                got,
                text_model(k, value, cs, hay),
                "{k:?} {value:?} ~ {hay:?} cs={cs}"
            );
            if cs {
                assert!(
                    !got || text_matches(k, value, false, hay),
                    "case-sensitive but not insensitive"
                );
            } else {
                assert_eq!(
                    got,
                    text_matches(k, value, false, &hay.to_ascii_uppercase())
                );
                assert_eq!(
                    got,
                    text_matches(k, &value.to_ascii_lowercase(), false, hay)
                );
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let m = Match {
        method: input.method.as_ref().map(MethodIn::name),
        path: input.path.as_ref().map(|(exact, value, cs)| PathMatch {
            kind: if *exact {
                StringMatchKind::Exact
            } else {
                StringMatchKind::Prefix
            },
            value: value.string(),
            case_sensitive: *cs,
        }),
        headers: input
            .headers
            .iter()
            .take(5)
            .map(|(name, kind, value, cs)| HeaderMatch {
                name: name.string(),
                kind: (*kind).into(),
                value: value.string(),
                case_sensitive: *cs,
            })
            .collect(),
    };
    let anything = Match {
        method: None,
        path: None,
        headers: Vec::new(),
    };
    for r in input.requests.iter().take(4) {
        let method = r.method.method();
        let path = r.path.string();
        let headers = header_map(&r.headers);
        assert_eq!(
            rule_matches(&m, &method, &path, &headers),
            rule_model(&m, &method, &path, &headers),
            "{m:?} on {method} {path:?} {headers:?}"
        );
        assert!(rule_matches(&anything, &method, &path, &headers));
        if let Some(p) = &m.path {
            check_text(&p.value, path.as_bytes());
        }
        for h in &m.headers {
            for v in headers.get_all(h.name.as_str()) {
                check_text(&h.value, v.as_bytes());
            }
        }
    }
});
