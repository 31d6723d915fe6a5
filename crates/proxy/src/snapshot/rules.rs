//! Listener rules compiled for matching: header names parsed, case folding done, once per snapshot.

use http::{HeaderMap, HeaderName, Method};
use trellis_config::{HeaderMatch, Match, PathMatch, StringMatchKind};

/// One rule's conditions; every present one must hold.
#[derive(Debug)]
pub struct Conditions {
    method: Option<Method>,
    path: Option<TextMatcher>,
    headers: Box<[(HeaderName, TextMatcher)]>,
    /// A method or header name `http` cannot represent, so no request has it: the rule matches nothing
    /// (dropping the condition would make it match more than it says). Validation keeps them out.
    unsatisfiable: bool,
}

impl Conditions {
    pub fn compile(m: &Match) -> Self {
        let method = m
            .method
            .as_deref()
            .map(|s| Method::from_bytes(s.as_bytes()));
        let headers: Vec<_> = m
            .headers
            .iter()
            .map(|h| HeaderName::from_bytes(h.name.as_bytes()).map(|n| (n, TextMatcher::header(h))))
            .collect();
        Conditions {
            unsatisfiable: matches!(method, Some(Err(_))) || headers.iter().any(Result::is_err),
            method: method.and_then(Result::ok),
            path: m.path.as_ref().map(TextMatcher::path),
            headers: headers.into_iter().filter_map(Result::ok).collect(),
        }
    }

    #[inline]
    pub fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if self.unsatisfiable {
            return false;
        }
        if let Some(m) = &self.method {
            if m != method {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !p.matches(path.as_bytes()) {
                return false;
            }
        }
        // A header condition holds when any of the request's values for that name matches.
        self.headers.iter().all(|(name, matcher)| {
            headers
                .get_all(name)
                .iter()
                .any(|v| matcher.matches(v.as_bytes()))
        })
    }
}

/// exact / prefix / contains over bytes, ASCII case-insensitive unless asked otherwise (Lattice's rule).
#[derive(Debug)]
pub struct TextMatcher {
    kind: StringMatchKind,
    /// Lower-cased when `!case_sensitive`.
    needle: Box<[u8]>,
    case_sensitive: bool,
}

impl TextMatcher {
    fn path(p: &PathMatch) -> Self {
        Self::new(p.kind, &p.value, p.case_sensitive)
    }

    fn header(h: &HeaderMatch) -> Self {
        Self::new(h.kind, &h.value, h.case_sensitive)
    }

    pub fn new(kind: StringMatchKind, value: &str, case_sensitive: bool) -> Self {
        let needle = if case_sensitive {
            value.as_bytes().into()
        } else {
            value.to_ascii_lowercase().into_bytes().into()
        };
        TextMatcher {
            kind,
            needle,
            case_sensitive,
        }
    }

    #[inline]
    fn eq(&self, hay: &[u8]) -> bool {
        if self.case_sensitive {
            hay == &*self.needle
        } else {
            hay.eq_ignore_ascii_case(&self.needle)
        }
    }

    pub fn matches(&self, hay: &[u8]) -> bool {
        let n = self.needle.len();
        match self.kind {
            StringMatchKind::Exact => self.eq(hay),
            StringMatchKind::Prefix => hay.len() >= n && self.eq(&hay[..n]),
            StringMatchKind::Contains => n == 0 || hay.windows(n).any(|w| self.eq(w)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn path(kind: StringMatchKind, v: &str, cs: bool) -> Conditions {
        Conditions::compile(&Match {
            method: None,
            path: Some(PathMatch {
                kind,
                value: v.into(),
                case_sensitive: cs,
            }),
            headers: vec![],
        })
    }

    #[test]
    fn path_prefix_is_case_insensitive_by_default() {
        let c = path(StringMatchKind::Prefix, "/API/", false);
        let h = HeaderMap::new();
        assert!(c.matches(&Method::GET, "/api/users", &h));
        assert!(c.matches(&Method::GET, "/Api/", &h));
        assert!(!c.matches(&Method::GET, "/ap", &h));
        assert!(!c.matches(&Method::GET, "/apix", &h));
    }

    #[test]
    fn path_exact_case_sensitive() {
        let c = path(StringMatchKind::Exact, "/old", true);
        let h = HeaderMap::new();
        assert!(c.matches(&Method::GET, "/old", &h));
        assert!(!c.matches(&Method::GET, "/OLD", &h));
        assert!(!c.matches(&Method::GET, "/old/", &h));
    }

    #[test]
    fn method_and_headers_all_must_hold() {
        let c = Conditions::compile(&Match {
            method: Some("POST".into()),
            path: None,
            headers: vec![
                HeaderMatch {
                    name: "x-canary".into(),
                    kind: StringMatchKind::Exact,
                    value: "Yes".into(),
                    case_sensitive: false,
                },
                HeaderMatch {
                    name: "user-agent".into(),
                    kind: StringMatchKind::Contains,
                    value: "Bot".into(),
                    case_sensitive: true,
                },
            ],
        });
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("yes"));
        h.insert("user-agent", HeaderValue::from_static("GoodBot/1"));
        assert!(c.matches(&Method::POST, "/", &h));
        assert!(!c.matches(&Method::GET, "/", &h));
        h.insert("user-agent", HeaderValue::from_static("goodbot/1"));
        assert!(
            !c.matches(&Method::POST, "/", &h),
            "contains is case-sensitive here"
        );
        h.remove("user-agent");
        assert!(
            !c.matches(&Method::POST, "/", &h),
            "a missing header fails its condition"
        );
    }

    #[test]
    fn a_method_or_header_name_no_request_can_have_matches_nothing() {
        // Found by fuzz/fuzz_targets/rule_match.rs: such a condition was dropped, so the rule matched
        // every request. Validation keeps these names out of files; the matcher must not widen anyway.
        let h = HeaderMap::new();
        let bad_method = Conditions::compile(&Match {
            method: Some(String::new()),
            path: None,
            headers: vec![],
        });
        assert!(!bad_method.matches(&Method::GET, "/", &h));
        let bad_header = Conditions::compile(&Match {
            method: None,
            path: None,
            headers: vec![HeaderMatch {
                name: "x y".into(),
                kind: StringMatchKind::Contains,
                value: String::new(),
                case_sensitive: false,
            }],
        });
        assert!(!bad_header.matches(&Method::GET, "/", &h));
    }

    #[test]
    fn any_of_repeated_header_values_may_match() {
        let c = Conditions::compile(&Match {
            method: None,
            path: None,
            headers: vec![HeaderMatch {
                name: "x-t".into(),
                kind: StringMatchKind::Prefix,
                value: "ab".into(),
                case_sensitive: false,
            }],
        });
        let mut h = HeaderMap::new();
        h.append("x-t", HeaderValue::from_static("zz"));
        h.append("x-t", HeaderValue::from_static("ABc"));
        assert!(c.matches(&Method::GET, "/", &h));
    }
}
