//! What the fuzz targets share: inputs built with `arbitrary` (so libFuzzer mutates rules, policies and
//! requests rather than raw bytes that would mostly fail to decode), turned into the configuration model
//! as validation would leave it, and reference models: slow, plain code with the documented semantics
//! that the fast compiled matchers must agree with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use trellis_config::{AuthPolicy, Cidr, Effect, Match, PathPattern, Statement, StringMatchKind};
use trellis_proxy::fuzzing::Denial;

/// Text from a few characters, so that needles and haystacks meet often (case pairs, `/`, `*`, `%`,
/// a non-ASCII letter and the Kelvin sign, which Unicode but not ASCII folds to `k`), or any string.
#[derive(Arbitrary, Debug, Clone)]
pub enum Text {
    Few(Vec<Letter>),
    Any(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Letter {
    A,
    UpperA,
    B,
    UpperB,
    K,
    Slash,
    Dash,
    Dot,
    Star,
    Percent,
    Equals,
    Ampersand,
    EAcute,
    Kelvin,
}

impl Letter {
    fn as_str(self) -> &'static str {
        match self {
            Letter::A => "a",
            Letter::UpperA => "A",
            Letter::B => "b",
            Letter::UpperB => "B",
            Letter::K => "k",
            Letter::Slash => "/",
            Letter::Dash => "-",
            Letter::Dot => ".",
            Letter::Star => "*",
            Letter::Percent => "%",
            Letter::Equals => "=",
            Letter::Ampersand => "&",
            Letter::EAcute => "é",
            Letter::Kelvin => "\u{212A}",
        }
    }
}

impl Text {
    pub fn string(&self) -> String {
        match self {
            Text::Few(letters) => letters.iter().map(|l| l.as_str()).collect(),
            Text::Any(s) => s.clone(),
        }
    }
}

/// A header name: mostly as validation leaves it (a lower-case token of 1..=100 characters), sometimes
/// any string. Validation lets through names no request can carry (an auth policy's header name may be
/// a token of any length, and `http` refuses names of 64 KiB and more, which inputs of a few KB cannot
/// reach); the compiled matchers must treat a condition on such a name as the model does: unsatisfiable.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    XA,
    XB,
    UserAgent,
    Any(String),
    Raw(String),
}

impl Name {
    pub fn string(&self) -> String {
        match self {
            Name::XA => "x-a".into(),
            Name::XB => "x-b".into(),
            Name::UserAgent => "user-agent".into(),
            Name::Any(s) => {
                let lower = s.to_ascii_lowercase();
                if is_token(&lower) && lower.len() <= 100 {
                    lower
                } else {
                    "x-a".into()
                }
            }
            Name::Raw(s) => s.clone(),
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The methods validation accepts (Lattice's, and PATCH).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Verb {
    Connect,
    Delete,
    Get,
    Head,
    Options,
    Post,
    Put,
    Trace,
    Patch,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Connect => "CONNECT",
            Verb::Delete => "DELETE",
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Options => "OPTIONS",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Trace => "TRACE",
            Verb::Patch => "PATCH",
        }
    }
}

/// A request's method: a listed one, or any a client may send (an extension method, lower case...).
#[derive(Arbitrary, Debug, Clone)]
pub enum MethodIn {
    Listed(Verb),
    Other(String),
}

impl MethodIn {
    /// As written in a rule or statement: validation allows only the listed methods, but the matchers
    /// must not match more than the model says for any other (an invalid one matches no request).
    pub fn name(&self) -> String {
        match self {
            MethodIn::Listed(v) => v.as_str().into(),
            MethodIn::Other(s) => s.clone(),
        }
    }

    pub fn method(&self) -> Method {
        match self {
            MethodIn::Listed(v) => Method::from_bytes(v.as_str().as_bytes()).unwrap_or(Method::GET),
            MethodIn::Other(s) => Method::from_bytes(s.as_bytes()).unwrap_or(Method::GET),
        }
    }
}

/// A request's headers; values a client cannot send (control characters) are left out.
pub fn header_map(headers: &[(Name, Text)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter().take(8) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.string().as_bytes()),
            HeaderValue::from_bytes(value.string().as_bytes()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

// ---------------------------------------------------------------------------------------------------
// Listener rules

/// Lattice's string match semantics, spelled out: compare as bytes, ASCII letters folded unless
/// `case_sensitive`; `contains ""` holds for anything.
pub fn text_model(kind: StringMatchKind, value: &str, case_sensitive: bool, hay: &[u8]) -> bool {
    let fold = |b: &[u8]| -> Vec<u8> {
        if case_sensitive {
            b.to_vec()
        } else {
            b.iter().map(u8::to_ascii_lowercase).collect()
        }
    };
    let (needle, hay) = (fold(value.as_bytes()), fold(hay));
    match kind {
        StringMatchKind::Exact => hay == needle,
        StringMatchKind::Prefix => hay.starts_with(&needle),
        StringMatchKind::Contains => (0..=hay.len()).any(|i| hay[i..].starts_with(&needle)),
    }
}

/// A rule matches when its method (if any) is the request's, its path condition (if any) holds, and
/// every header condition holds for at least one of that header's values.
pub fn rule_model(m: &Match, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    m.method
        .as_deref()
        .is_none_or(|want| want == method.as_str())
        && m.path
            .as_ref()
            .is_none_or(|p| text_model(p.kind, &p.value, p.case_sensitive, path.as_bytes()))
        && m.headers.iter().all(|h| {
            headers
                .get_all(h.name.as_str())
                .iter()
                .any(|v| text_model(h.kind, &h.value, h.case_sensitive, v.as_bytes()))
        })
}

// ---------------------------------------------------------------------------------------------------
// Auth policies

/// `*` matches any run of bytes (none included), anything else itself: dynamic programming over
/// (pattern prefix, text prefix), quadratic and obviously right.
pub fn glob_model(pattern: &[u8], text: &[u8]) -> bool {
    // row[j]: the pattern read so far matches text[..j].
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &c in pattern {
        let mut next = vec![false; text.len() + 1];
        if c == b'*' {
            let mut any = false;
            for j in 0..=text.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == c;
            }
        }
        row = next;
    }
    row[text.len()]
}

/// A CIDR block holds an address when their first `prefix` bits agree; an IPv4-mapped IPv6 address
/// counts as its IPv4 address.
pub fn cidr_model(c: &Cidr, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let bits = |a: IpAddr| -> Vec<bool> {
        let octets = match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        octets
            .iter()
            .flat_map(|o| (0..8).rev().map(move |i| o >> i & 1 == 1))
            .collect()
    };
    if c.addr.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    let n = usize::from(c.prefix);
    bits(c.addr)[..n] == bits(ip)[..n]
}

/// `text` percent-decoded, `+` as a space; a `%` without two hex digits stays as it is.
pub fn decode_model(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The `key=value` pairs of a query (a pair without `=` has an empty value), decoded.
fn pairs_model(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .map(|pair| match pair.find('=') {
            Some(i) => (decode_model(&pair[..i]), decode_model(&pair[i + 1..])),
            None => (decode_model(pair), Vec::new()),
        })
        .collect()
}

/// A deny's query condition: some occurrence of `key` has `value`; an allow's: `key` occurs, and every
/// occurrence has `value`. Both compared decoded.
pub fn query_model(query: &str, key: &str, value: &str, deny: bool) -> bool {
    let with_key: Vec<Vec<u8>> = pairs_model(query)
        .into_iter()
        .filter(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v)
        .collect();
    if deny {
        with_key.iter().any(|v| v == value.as_bytes())
    } else {
        !with_key.is_empty() && with_key.iter().all(|v| v == value.as_bytes())
    }
}

/// A path condition: exact or prefix; a deny's in any ASCII case, and also on the path with the
/// `;parameters` of its segments removed.
fn path_model(p: &PathPattern, path: &str, deny: bool) -> bool {
    let fold = |s: &str| if deny { s.to_ascii_lowercase() } else { s.to_string() };
    let mut candidates = vec![fold(path)];
    if deny {
        let stripped: Vec<&str> = path.split('/').map(|s| s.split(';').next().unwrap_or("")).collect();
        candidates.push(fold(&stripped.join("/")));
    }
    candidates.iter().any(|path| match p {
        PathPattern::Exact(e) => *path == fold(e),
        PathPattern::Prefix(pre) => path.as_bytes().starts_with(fold(pre).as_bytes()),
    })
}

/// Every condition a statement has must hold; a list holds when any of its entries does.
pub fn statement_model<B>(
    s: &Statement,
    req: &Request<B>,
    ip: IpAddr,
    identity: Option<&[u8]>,
) -> bool {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let deny = s.effect == Effect::Deny;
    let method = req.method().as_str();
    (s.methods.is_empty()
        || s.methods
            .iter()
            .any(|m| m == method || (deny && m.eq_ignore_ascii_case(method))))
        && (s.source_cidrs.is_empty() || s.source_cidrs.iter().any(|c| cidr_model(c, ip)))
        && (s.paths.is_empty() || s.paths.iter().any(|p| path_model(p, path, deny)))
        && s.headers.iter().all(|(name, pattern)| {
            req.headers()
                .get_all(name.as_str())
                .iter()
                .any(|v| glob_model(pattern.as_bytes(), v.as_bytes()))
        })
        && s.query.iter().all(|(k, v)| query_model(query, k, v, deny))
        && (s.principals.is_empty()
            || identity.is_some_and(|id| s.principals.iter().any(|p| glob_model(p.as_bytes(), id))))
}

/// IAM's and Lattice's evaluation: the first matching deny statement denies; else a matching allow
/// allows; else nothing allowed it.
pub fn policy_model<B>(
    p: &AuthPolicy,
    req: &Request<B>,
    ip: IpAddr,
    identity: Option<&[u8]>,
) -> Result<(), Denial> {
    let matching: Vec<(usize, &Statement)> = p
        .statements
        .iter()
        .enumerate()
        .filter(|(_, s)| statement_model(s, req, ip, identity))
        .collect();
    if let Some((i, _)) = matching.iter().find(|(_, s)| s.effect == Effect::Deny) {
        return Err(Denial::Statement(*i));
    }
    if matching.is_empty() {
        Err(Denial::NoAllow)
    } else {
        Ok(())
    }
}

/// A statement: CIDR prefixes within the address's bits, as validation leaves them (`Cidr::contains`
/// relies on it); methods and header names mostly as validation leaves them, sometimes anything; the
/// rest as it comes, to cover what validation would refuse too.
#[derive(Arbitrary, Debug, Clone)]
pub struct StatementIn {
    pub deny: bool,
    pub principals: Vec<Text>,
    pub source_cidrs: Vec<CidrIn>,
    pub methods: Vec<MethodIn>,
    pub paths: Vec<(bool, Text)>,
    pub headers: Vec<(Name, Text)>,
    pub query: Vec<(Text, Text)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum CidrIn {
    V4([u8; 4], u8),
    V6([u8; 16], u8),
}

impl CidrIn {
    pub fn cidr(self) -> Cidr {
        match self {
            CidrIn::V4(a, p) => Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(a)),
                prefix: p % 33,
            },
            CidrIn::V6(a, p) => Cidr {
                addr: IpAddr::V6(Ipv6Addr::from(a)),
                prefix: p % 129,
            },
        }
    }
}

impl StatementIn {
    pub fn statement(&self) -> Statement {
        Statement {
            effect: if self.deny {
                Effect::Deny
            } else {
                Effect::Allow
            },
            principals: self.principals.iter().take(4).map(Text::string).collect(),
            source_cidrs: self.source_cidrs.iter().take(4).map(|c| c.cidr()).collect(),
            methods: self.methods.iter().take(4).map(MethodIn::name).collect(),
            paths: self
                .paths
                .iter()
                .take(4)
                .map(|(prefix, t)| {
                    let p = format!("/{}", t.string());
                    if *prefix {
                        PathPattern::Prefix(p)
                    } else {
                        PathPattern::Exact(p)
                    }
                })
                .collect(),
            headers: self
                .headers
                .iter()
                .take(4)
                .map(|(n, v)| (n.string(), v.string()))
                .collect(),
            query: self
                .query
                .iter()
                .take(4)
                .map(|(k, v)| (k.string(), v.string()))
                .collect(),
        }
    }
}

/// Where a request comes from: any address, or one next to a CIDR block of the policy (the block's
/// address with one bit flipped, so inside or just outside), maybe as an IPv4-mapped IPv6 address.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum IpIn {
    V4([u8; 4]),
    V6([u8; 16]),
    Near { cidr: u8, flip: u8, mapped: bool },
}

impl IpIn {
    pub fn ip(self, cidrs: &[Cidr]) -> IpAddr {
        match self {
            IpIn::V4(a) => IpAddr::V4(a.into()),
            IpIn::V6(a) => IpAddr::V6(a.into()),
            IpIn::Near { .. } if cidrs.is_empty() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpIn::Near { cidr, flip, mapped } => {
                let c = cidrs[usize::from(cidr) % cidrs.len()];
                match c.addr {
                    IpAddr::V4(a) => {
                        let a = Ipv4Addr::from(u32::from(a) ^ (1u32 << (flip % 32)));
                        if mapped {
                            IpAddr::V6(a.to_ipv6_mapped())
                        } else {
                            IpAddr::V4(a)
                        }
                    }
                    IpAddr::V6(a) => {
                        IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (1u128 << (flip % 128))))
                    }
                }
            }
        }
    }
}

/// A request to a policy: the URI is `/` + path, then `?` + the query if any; requests whose URI does
/// not parse are skipped (a client could not send them).
#[derive(Arbitrary, Debug, Clone)]
pub struct RequestIn {
    pub method: MethodIn,
    pub path: Text,
    pub query: Option<QueryIn>,
    pub headers: Vec<(Name, Text)>,
    pub ip: IpIn,
    pub identity: Option<Text>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum QueryIn {
    Pairs(Vec<(Text, Option<Text>)>),
    Raw(Text),
}

impl QueryIn {
    fn string(&self) -> String {
        match self {
            QueryIn::Raw(t) => t.string(),
            QueryIn::Pairs(pairs) => pairs
                .iter()
                .take(6)
                .map(|(k, v)| match v {
                    Some(v) => format!("{}={}", k.string(), v.string()),
                    None => k.string(),
                })
                .collect::<Vec<_>>()
                .join("&"),
        }
    }
}

impl RequestIn {
    /// The request, where it comes from, and its mTLS identity (if any, and if it is a valid header
    /// value, as the TLS layer makes it).
    pub fn build(&self, cidrs: &[Cidr]) -> Option<(Request<()>, IpAddr, Option<HeaderValue>)> {
        let mut uri = format!("/{}", self.path.string());
        if let Some(q) = &self.query {
            uri.push('?');
            uri.push_str(&q.string());
        }
        let mut req = Request::builder()
            .method(self.method.method())
            .uri(uri)
            .body(())
            .ok()?;
        *req.headers_mut() = header_map(&self.headers);
        let identity = self
            .identity
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&t.string()).ok());
        Some((req, self.ip.ip(cidrs), identity))
    }
}

// ---------------------------------------------------------------------------------------------------
// Configuration text

/// The file name every diagnostic must carry.
pub const CONFIG_FILE: &str = "fuzz.toml";

/// Parses `text` and checks what any answer must satisfy: a configuration, or a non-empty list of
/// diagnostics naming the file, on lines of the text, in file order, each line of the printed error
/// starting with `FILE:`; the same answer twice.
pub fn parse_checked(text: &str) -> Option<trellis_config::Config> {
    use std::path::Path;
    use trellis_config::{parse, ConfigError};
    let path = Path::new(CONFIG_FILE);
    match parse(text, path) {
        Ok(config) => {
            assert_eq!(config.source, path);
            let again = parse(text, path).expect("the same text parsed once");
            assert!(again == config, "parse is not deterministic");
            Some(config)
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            let lines = text.matches('\n').count() + 1;
            for d in &diagnostics {
                assert_eq!(d.file, CONFIG_FILE);
                if let Some(line) = d.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {d}");
                }
                if let Some(column) = d.column {
                    assert!(d.line.is_some() && column >= 1, "column {column}: {d}");
                }
            }
            assert!(
                diagnostics
                    .windows(2)
                    .all(|w| w[0].line.unwrap_or(0) <= w[1].line.unwrap_or(0)),
                "diagnostics out of file order"
            );
            match parse(text, path) {
                Err(ConfigError::Invalid(again)) => {
                    assert!(again == diagnostics, "parse is not deterministic")
                }
                other => panic!("the same text parsed differently: {other:?}"),
            }
            let shown = ConfigError::Invalid(diagnostics).to_string();
            let prefix = format!("{CONFIG_FILE}:");
            for line in shown.lines() {
                assert!(
                    line.starts_with(&prefix),
                    "a line of the error does not name the file: {line:?}"
                );
            }
            None
        }
        Err(e) => panic!("parse returned an I/O error: {e}"),
    }
}

/// A TOML basic string holding `s` exactly.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
