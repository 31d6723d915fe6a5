//! Auth policies compiled with the snapshot: header names parsed, methods resolved, globs kept as bytes.
//! Evaluating one walks the statements once and allocates nothing.

use std::sync::Arc;

use http::{HeaderName, Method, Request};
use trellis_config::{AuthPolicy, Cidr, Effect, PathPattern, Statement};

use super::glob;
use super::Caller;
use crate::head::path::without_parameters;

pub struct Policy {
    pub name: Arc<str>,
    statements: Box<[Compiled]>,
}

struct Compiled {
    deny: bool,
    principals: Box<[Box<[u8]>]>,
    cidrs: Box<[Cidr]>,
    methods: Box<[Method]>,
    paths: Box<[PathPattern]>,
    headers: Box<[(HeaderName, Box<[u8]>)]>,
    query: Box<[Pair]>,
    /// A condition no request can meet: every method listed, or a header name, is one `http` cannot
    /// represent. The statement matches nothing; dropping the condition would widen it (an allow would
    /// allow everything). Validation accepts header names of any length, and `http` refuses 64 KiB ones.
    unsatisfiable: bool,
}

/// A query key and the value it must have.
type Pair = (Box<[u8]>, Box<[u8]>);

/// Why a policy denied a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Statement N (0-based) matched and says deny.
    Statement(usize),
    /// No statement allows the request.
    NoAllow,
}

impl Policy {
    pub fn compile(policy: &AuthPolicy) -> Policy {
        Policy {
            name: policy.name.as_str().into(),
            statements: policy.statements.iter().map(compile).collect(),
        }
    }

    /// An explicit deny wins over any allow; without a matching allow the request is denied.
    pub fn evaluate<B>(&self, req: &Request<B>, caller: &mut Caller<'_>) -> Result<(), Denial> {
        let mut allowed = false;
        for (i, s) in self.statements.iter().enumerate() {
            // A deny must be looked for even after an allow matched; an allow after one did not matter.
            if !s.deny && allowed {
                continue;
            }
            if s.matches(req, caller) {
                if s.deny {
                    return Err(Denial::Statement(i));
                }
                allowed = true;
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(Denial::NoAllow)
        }
    }
}

fn compile(s: &Statement) -> Compiled {
    // A method no request can have is left out of the list: the others may still match.
    let methods: Box<[Method]> = s
        .methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect();
    let headers: Vec<_> = s
        .headers
        .iter()
        .map(|(n, v)| HeaderName::from_bytes(n.as_bytes()).map(|n| (n, v.as_bytes().into())))
        .collect();
    Compiled {
        deny: s.effect == Effect::Deny,
        unsatisfiable: (methods.is_empty() && !s.methods.is_empty())
            || headers.iter().any(Result::is_err),
        principals: s.principals.iter().map(|p| p.as_bytes().into()).collect(),
        cidrs: s.source_cidrs.clone().into(),
        methods,
        paths: s.paths.clone().into(),
        headers: headers.into_iter().filter_map(Result::ok).collect(),
        query: s
            .query
            .iter()
            .map(|(k, v)| (k.as_bytes().into(), v.as_bytes().into()))
            .collect(),
    }
}

/// Requests reach this with their path normalised (see `head`), so `/%70rivate`, `//private` and
/// `/a/../private` are all `/private` here. What stays ambiguous is read in the direction that cannot
/// widen access: a *deny* matches more (any case of its path and method, a path with `;parameters`
/// stripped as Tomcat strips them, any occurrence of a query key), an *allow* matches less (exact case,
/// and every occurrence of a query key must have its value).
impl Compiled {
    /// Cheap conditions first; the caller's identity (which may mean verifying a JWT) last.
    fn matches<B>(&self, req: &Request<B>, caller: &mut Caller<'_>) -> bool {
        !self.unsatisfiable
            && (self.methods.is_empty() || self.method_matches(req.method()))
            && (self.cidrs.is_empty() || self.cidrs.iter().any(|c| c.contains(caller.ip)))
            && (self.paths.is_empty() || self.path_matches(req.uri().path()))
            && self.headers.iter().all(|(name, pattern)| {
                req.headers()
                    .get_all(name)
                    .iter()
                    .any(|v| glob::matches(pattern, v.as_bytes()))
            })
            && self
                .query
                .iter()
                .all(|(k, v)| query_matches(req.uri().query().unwrap_or(""), k, v, self.deny))
            && (self.principals.is_empty()
                || caller
                    .identities()
                    .any(|id| self.principals.iter().any(|p| glob::matches(p, id))))
    }

    fn method_matches(&self, method: &Method) -> bool {
        if self.deny {
            // `delete` is not `DELETE` to HTTP, but some frameworks upper-case what they get.
            let m = method.as_str();
            self.methods
                .iter()
                .any(|x| x.as_str().eq_ignore_ascii_case(m))
        } else {
            self.methods.contains(method)
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        let deny = self.deny;
        if self
            .paths
            .iter()
            .any(|p| path_pattern_matches(p, path, deny))
        {
            return true;
        }
        if deny {
            if let Some(stripped) = without_parameters(path) {
                return self
                    .paths
                    .iter()
                    .any(|p| path_pattern_matches(p, &stripped, true));
            }
        }
        false
    }
}

fn path_pattern_matches(pattern: &PathPattern, path: &str, any_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if any_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern {
        PathPattern::Exact(p) => eq(p, path),
        PathPattern::Prefix(p) => {
            path.len() >= p.len() && path.is_char_boundary(p.len()) && eq(p, &path[..p.len()])
        }
    }
}

/// Whether the query has `key=value`, both compared percent-decoded (`+` as a space), as the target
/// will read them. A deny needs one such pair; an allow needs the key, every time with that value.
fn query_matches(query: &str, key: &[u8], value: &[u8], deny: bool) -> bool {
    let mut found = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !decoded_eq(k.as_bytes(), key) {
            continue;
        }
        let same = decoded_eq(v.as_bytes(), value);
        if deny && same {
            return true;
        }
        if !deny && !same {
            return false;
        }
        found = true;
    }
    found && !deny
}

/// Whether `encoded` (a query key or value as sent) decodes to `plain`, without allocating.
fn decoded_eq(encoded: &[u8], plain: &[u8]) -> bool {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let (mut i, mut j) = (0, 0);
    while i < encoded.len() {
        let (byte, used) = match encoded[i] {
            b'+' => (b' ', 1),
            b'%' => match (
                encoded.get(i + 1).copied().and_then(hex),
                encoded.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => (hi << 4 | lo, 3),
                _ => (b'%', 1),
            },
            c => (c, 1),
        };
        if plain.get(j) != Some(&byte) {
            return false;
        }
        i += used;
        j += 1;
    }
    j == plain.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Caller, Verifier};
    use http::HeaderValue;

    fn statement(effect: Effect) -> Statement {
        Statement {
            effect,
            ..Statement::default()
        }
    }

    fn policy(statements: Vec<Statement>) -> Policy {
        Policy::compile(&AuthPolicy {
            name: "p".into(),
            statements,
        })
    }

    fn eval(p: &Policy, req: &Request<()>, ip: &str, identity: Option<&str>) -> Result<(), Denial> {
        let verifier = Verifier::default();
        let identity = identity.map(|i| HeaderValue::from_str(i).unwrap());
        let mut caller = Caller::new(req, ip.parse().unwrap(), identity.as_ref(), &verifier);
        p.evaluate(req, &mut caller)
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn no_allow_denies_and_an_empty_statement_allows_everything() {
        assert_eq!(
            eval(&policy(vec![]), &get("/"), "10.0.0.1", None),
            Err(Denial::NoAllow)
        );
        let open = policy(vec![statement(Effect::Allow)]);
        assert_eq!(eval(&open, &get("/x"), "10.0.0.1", None), Ok(()));
    }

    #[test]
    fn an_explicit_deny_wins_over_an_earlier_allow() {
        let mut deny = statement(Effect::Deny);
        deny.paths = vec![PathPattern::Prefix("/admin".into())];
        let p = policy(vec![statement(Effect::Allow), deny]);
        assert_eq!(eval(&p, &get("/shop"), "10.0.0.1", None), Ok(()));
        assert_eq!(
            eval(&p, &get("/admin/x"), "10.0.0.1", None),
            Err(Denial::Statement(1))
        );
    }

    #[test]
    fn every_condition_kind() {
        let mut s = statement(Effect::Allow);
        s.principals = vec!["spiffe://corp/*".into()];
        s.source_cidrs = vec![Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        }];
        s.methods = vec!["GET".into(), "HEAD".into()];
        s.paths = vec![
            PathPattern::Exact("/health".into()),
            PathPattern::Prefix("/api/".into()),
        ];
        s.headers = vec![("x-env".into(), "prod*".into())];
        s.query = vec![("v".into(), "2".into())];
        let p = policy(vec![s]);
        let request = |method: &str, uri: &str, env: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .header("x-env", env)
                .body(())
                .unwrap()
        };
        let ok = request("GET", "/api/items?a=1&v=2", "prod-eu");
        let id = Some("spiffe://corp/web");
        assert_eq!(eval(&p, &ok, "10.1.2.3", id), Ok(()));
        assert_eq!(
            eval(&p, &request("HEAD", "/health?v=2", "prod"), "10.1.2.3", id),
            Ok(())
        );
        // Each condition failing on its own.
        assert!(eval(&p, &ok, "10.1.2.3", Some("spiffe://other/web")).is_err());
        assert!(eval(&p, &ok, "10.1.2.3", None).is_err());
        assert!(eval(&p, &ok, "192.168.1.1", id).is_err());
        assert!(eval(
            &p,
            &request("POST", "/api/items?v=2", "prod"),
            "10.1.2.3",
            id
        )
        .is_err());
        assert!(eval(&p, &request("GET", "/healthz?v=2", "prod"), "10.1.2.3", id).is_err());
        assert!(eval(
            &p,
            &request("GET", "/api/items?v=3", "prod"),
            "10.1.2.3",
            id
        )
        .is_err());
        assert!(eval(
            &p,
            &request("GET", "/api/items?v=2", "staging"),
            "10.1.2.3",
            id
        )
        .is_err());
        let no_header = get("/api/items?v=2");
        assert!(eval(&p, &no_header, "10.1.2.3", id).is_err());
    }

    #[test]
    fn a_condition_no_request_can_meet_is_not_dropped() {
        // Found by fuzz/fuzz_targets/auth_policy.rs: the header condition was dropped, so this allow
        // statement allowed every request. `trellis check` accepts such a name (any token).
        let mut s = statement(Effect::Allow);
        s.headers = vec![("x".repeat(1 << 16), "secret".into())];
        let p = policy(vec![s]);
        assert_eq!(eval(&p, &get("/"), "10.0.0.1", None), Err(Denial::NoAllow));
        // A method list of nothing a request can have is not "any method".
        let mut s = statement(Effect::Allow);
        s.methods = vec!["NOT A METHOD".into()];
        assert_eq!(
            eval(&policy(vec![s]), &get("/"), "10.0.0.1", None),
            Err(Denial::NoAllow)
        );
        // And a deny on such a name denies nothing.
        let mut deny = statement(Effect::Deny);
        deny.headers = vec![(String::new(), "*".into())];
        let p = policy(vec![deny, statement(Effect::Allow)]);
        assert_eq!(eval(&p, &get("/"), "10.0.0.1", None), Ok(()));
    }

    #[test]
    fn a_deny_covers_the_variants_an_allow_does_not() {
        let mut deny = statement(Effect::Deny);
        deny.paths = vec![PathPattern::Prefix("/private/".into())];
        deny.methods = vec!["DELETE".into()];
        let p = policy(vec![statement(Effect::Allow), deny]);
        let req =
            |method: &str, uri: &str| Request::builder().method(method).uri(uri).body(()).unwrap();
        for (method, uri) in [
            ("DELETE", "/private/x"),
            ("delete", "/private/x"),
            ("DELETE", "/PRIVATE/x"),
            ("DELETE", "/Private/x"),
            ("DELETE", "/private;jsessionid=1/x"),
        ] {
            assert_eq!(
                eval(&p, &req(method, uri), "10.0.0.1", None),
                Err(Denial::Statement(1)),
                "{method} {uri}"
            );
        }
        assert_eq!(
            eval(&p, &req("GET", "/private/x"), "10.0.0.1", None),
            Ok(())
        );

        let mut allow = statement(Effect::Allow);
        allow.paths = vec![PathPattern::Prefix("/public/".into())];
        allow.methods = vec!["GET".into()];
        let p = policy(vec![allow]);
        assert_eq!(eval(&p, &req("GET", "/public/x"), "10.0.0.1", None), Ok(()));
        for (method, uri) in [("GET", "/PUBLIC/x"), ("get", "/public/x")] {
            assert_eq!(
                eval(&p, &req(method, uri), "10.0.0.1", None),
                Err(Denial::NoAllow),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn query_conditions_compare_decoded_values() {
        let mut deny = statement(Effect::Deny);
        deny.query = vec![("debug".into(), "1".into())];
        let p = policy(vec![statement(Effect::Allow), deny]);
        for uri in [
            "/?debug=1",
            "/?debug=%31",
            "/?%64ebug=1",
            "/?x=0&debug=1",
            "/?debug=0&debug=1",
        ] {
            assert_eq!(
                eval(&p, &get(uri), "10.0.0.1", None),
                Err(Denial::Statement(1)),
                "{uri}"
            );
        }
        assert_eq!(eval(&p, &get("/?debug=10"), "10.0.0.1", None), Ok(()));

        let mut allow = statement(Effect::Allow);
        allow.query = vec![("v".into(), "2 b".into())];
        let p = policy(vec![allow]);
        assert_eq!(eval(&p, &get("/?v=2+b"), "10.0.0.1", None), Ok(()));
        assert_eq!(eval(&p, &get("/?v=2%20b"), "10.0.0.1", None), Ok(()));
        assert_eq!(
            eval(&p, &get("/?v=2+b&v=3"), "10.0.0.1", None),
            Err(Denial::NoAllow),
            "every v must be 2 b"
        );
        assert_eq!(
            eval(&p, &get("/?w=2+b"), "10.0.0.1", None),
            Err(Denial::NoAllow)
        );
    }

    #[test]
    fn ipv6_and_mapped_ipv4_cidrs() {
        let mut s = statement(Effect::Allow);
        s.source_cidrs = vec![
            Cidr {
                addr: "2001:db8::".parse().unwrap(),
                prefix: 32,
            },
            Cidr {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 32,
            },
        ];
        let p = policy(vec![s]);
        assert_eq!(eval(&p, &get("/"), "2001:db8::7", None), Ok(()));
        assert_eq!(eval(&p, &get("/"), "::ffff:127.0.0.1", None), Ok(()));
        assert!(eval(&p, &get("/"), "2001:db9::7", None).is_err());
        assert!(eval(&p, &get("/"), "127.0.0.2", None).is_err());
    }
}
