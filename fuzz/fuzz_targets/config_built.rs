//! `trellis_config::parse` on configuration files written from structured input: services, listeners,
//! rules (matches and actions), target groups, auth policies and `[network]`, with values that are mostly
//! plausible and sometimes anything. Besides what `config_parse` checks of every answer: when the file
//! is valid, every rule's match and every auth policy of the validated configuration, compiled as a
//! snapshot compiles them, agree with the plain models on a few requests (validation's output is what
//! the matchers expect).
#![no_main]

use std::cell::Cell;
use std::fmt::Write;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trellis_config::Cidr;
use trellis_fuzz::{
    parse_checked, policy_model, rule_model, toml_string, MethodIn, RequestIn, Text,
};
use trellis_proxy::fuzzing::{policy_allows, rule_matches};

thread_local! {
    /// The input's `strict`: every value as its key expects it, so that files come out valid often
    /// enough for the matchers to be checked on what validation makes of them.
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

fn strict() -> bool {
    STRICT.with(Cell::get)
}

#[derive(Arbitrary, Debug)]
struct Input {
    strict: bool,
    network_policy: Option<NameIn>,
    policies: Vec<PolicyIn>,
    services: Vec<ServiceIn>,
    /// `g0`, `g1`, `g2`, so that forwards resolve.
    groups: [GroupIn; 3],
    /// A last line of anything.
    extra: Option<String>,
    requests: Vec<RequestIn>,
}

/// A reference to a policy or target group: one of the first few names (`p0`, `g1`...), or any text.
#[derive(Arbitrary, Debug)]
enum NameIn {
    Few(u8),
    Any(Text),
}

impl NameIn {
    fn string(&self, prefix: &str) -> String {
        match self {
            NameIn::Few(i) if !strict() => format!("{prefix}{}", i % 3),
            NameIn::Any(t) if !strict() => t.string(),
            _ => format!("{prefix}0"),
        }
    }
}

/// The name of the `i`th thing: mostly `PREFIXi` (unique), sometimes any text.
#[derive(Arbitrary, Debug)]
enum Own {
    Index,
    Index2,
    Index3,
    Any(Text),
}

fn own(prefix: &str, i: usize, name: &Own) -> String {
    toml_string(&match name {
        Own::Any(t) if !strict() => t.string(),
        _ => format!("{prefix}{i}"),
    })
}

/// A string value: plausible text, or one of a few that some key expects.
#[derive(Arbitrary, Debug)]
enum Str {
    Text(Text),
    Slash(Text),
    Known(u8),
}

const KNOWN: &[&str] = &[
    "*",
    "allow",
    "deny",
    "http",
    "https",
    "tls_passthrough",
    "tcp",
    "GET",
    "/",
    "/api/*",
    "10.0.0.0/8",
    "::1",
    "127.0.0.1:9000",
    "*.example.com",
    "shop.example",
    "10s",
    "",
];

impl Str {
    fn string(&self) -> String {
        match self {
            Str::Text(t) | Str::Slash(t) if strict() => {
                // Letters only: a valid header name, value, path segment, principal or query key.
                let letters: String = t
                    .string()
                    .chars()
                    .filter(char::is_ascii_lowercase)
                    .collect();
                let word = if letters.is_empty() {
                    "x".into()
                } else {
                    letters
                };
                match self {
                    Str::Slash(_) => format!("/{word}"),
                    _ => word,
                }
            }
            Str::Known(_) if strict() => "x".into(),
            Str::Text(t) => t.string(),
            Str::Slash(t) => format!("/{}", t.string()),
            Str::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].into(),
        }
    }

    fn toml(&self) -> String {
        toml_string(&self.string())
    }
}

/// A value some key expects (so that whole files come out valid often enough to reach the matchers),
/// or any string.
#[derive(Arbitrary, Debug)]
enum Pick<const K: usize> {
    Expected(u8),
    Other(Str),
}

impl<const K: usize> Pick<K> {
    fn toml(&self) -> String {
        match self {
            Pick::Expected(i) => {
                let options = EXPECTED[K];
                toml_string(options[usize::from(*i) % options.len()])
            }
            Pick::Other(_) if strict() => toml_string(EXPECTED[K][0]),
            Pick::Other(s) => s.toml(),
        }
    }
}

const EFFECT: usize = 0;
const PROTOCOL: usize = 1;
const HOST: usize = 2;
const EXPECTED: &[&[&str]] = &[
    &["allow", "deny"],
    &["http", "http", "https", "tls_passthrough"],
    &["*", "shop.example", "*.example", "api.shop.example"],
];

/// `LO + n % N`: in range (so that whole files come out valid often enough to reach the matchers), or
/// any number.
#[derive(Arbitrary, Debug)]
enum Num<const LO: i64, const N: i64> {
    InRange(u16),
    Any(Int),
}

impl<const LO: i64, const N: i64> Num<LO, N> {
    fn toml(&self) -> String {
        match self {
            Num::InRange(n) => (LO + i64::from(*n) % N).to_string(),
            Num::Any(_) if strict() => LO.to_string(),
            Num::Any(n) => n.toml(),
        }
    }
}

/// A number: small and plausible, or any.
#[derive(Arbitrary, Debug)]
enum Int {
    Small(u16),
    Any(i64),
}

impl Int {
    fn toml(&self) -> String {
        match self {
            Int::Small(n) => n.to_string(),
            Int::Any(n) => n.to_string(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PolicyIn {
    name: Own,
    statements: Vec<StatementIn>,
}

#[derive(Arbitrary, Debug)]
struct StatementIn {
    effect: Pick<EFFECT>,
    principals: Option<Vec<Str>>,
    source_cidrs: Option<Vec<CidrText>>,
    methods: Option<Vec<MethodIn>>,
    paths: Option<Vec<Str>>,
    headers: Option<Vec<(Str, Str)>>,
    query: Option<Vec<(Str, Str)>>,
}

/// `ADDR/PREFIX` with any prefix (validation must refuse the out-of-range ones), or any text.
#[derive(Arbitrary, Debug)]
enum CidrText {
    V4([u8; 4], Option<u8>),
    V6([u8; 16], Option<u8>),
    Any(Str),
}

impl CidrText {
    fn string(&self) -> String {
        let with = |addr: String, prefix: &Option<u8>| match prefix {
            Some(p) => format!("{addr}/{p}"),
            None => addr,
        };
        let strict = strict();
        match self {
            CidrText::V4(a, p) => with(
                std::net::Ipv4Addr::from(*a).to_string(),
                &p.map(|p| if strict { p % 33 } else { p }),
            ),
            CidrText::V6(a, p) => with(
                std::net::Ipv6Addr::from(*a).to_string(),
                &p.map(|p| if strict { p % 129 } else { p }),
            ),
            CidrText::Any(_) if strict => "10.0.0.0/8".into(),
            CidrText::Any(s) => s.string(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ServiceIn {
    name: Own,
    /// At least one, duplicates left out.
    hosts: (Pick<HOST>, Vec<Pick<HOST>>),
    auth_policy: Option<NameIn>,
    listeners: Vec<ListenerIn>,
}

#[derive(Arbitrary, Debug)]
struct ListenerIn {
    name: Own,
    protocol: Pick<PROTOCOL>,
    port: Num<1, 65535>,
    default_action: ActionIn,
    rules: Vec<RuleIn>,
}

#[derive(Arbitrary, Debug)]
struct RuleIn {
    name: Own,
    priority: Num<1, 256>,
    method: Option<MethodIn>,
    /// (exact rather than prefix, value, case_sensitive)
    path: Option<(bool, Str, Option<bool>)>,
    headers: Option<Vec<HeaderIn>>,
    action: ActionIn,
}

#[derive(Arbitrary, Debug)]
struct HeaderIn {
    name: Str,
    /// 0 exact, 1 prefix, 2 contains (and more: the key is any of them)
    kind: u8,
    value: Str,
    case_sensitive: Option<bool>,
}

#[derive(Arbitrary, Debug)]
enum ActionIn {
    /// At least one.
    Forward(
        (NameIn, Option<Num<0, 1000>>),
        Vec<(NameIn, Option<Num<0, 1000>>)>,
    ),
    Fixed {
        status: Num<200, 400>,
        body: Option<Str>,
    },
}

impl ActionIn {
    fn toml(&self) -> String {
        match self {
            ActionIn::Forward(first, rest) => {
                let mut names = Vec::new();
                let mut list = Vec::new();
                for (name, weight) in std::iter::once(first).chain(rest.iter().take(2)) {
                    let name = toml_string(&name.string("g"));
                    if names.contains(&name) {
                        continue;
                    }
                    names.push(name.clone());
                    list.push(match weight {
                        Some(w) => format!("{{ target_group = {name}, weight = {} }}", w.toml()),
                        None => format!("{{ target_group = {name} }}"),
                    });
                }
                format!("{{ forward = [{}] }}", list.join(", "))
            }
            ActionIn::Fixed { status, body } => match body {
                Some(b) => format!(
                    "{{ fixed_response = {{ status = {}, body = {} }} }}",
                    status.toml(),
                    b.toml()
                ),
                None => format!("{{ fixed_response = {{ status = {} }} }}", status.toml()),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct GroupIn {
    name: Own,
    protocol: Option<Str>,
    targets: Vec<([u8; 4], u16)>,
}

/// A path condition's value (strict: starting with `/`).
fn path(s: &Str) -> String {
    let value = s.string();
    if strict() && !value.starts_with('/') {
        toml_string(&format!("/{value}"))
    } else {
        toml_string(&value)
    }
}

fn method(m: &MethodIn) -> String {
    match m {
        MethodIn::Other(_) if strict() => toml_string("GET"),
        m => toml_string(&m.name()),
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn write_file(input: &Input) -> String {
    let mut f = String::new();
    let w = &mut f;
    let strict = strict();
    // Strict: a policy reference names `p0`, so only when there is one.
    let refs = !strict || !input.policies.is_empty();
    if let Some(p) = input.network_policy.as_ref().filter(|_| refs) {
        let _ = writeln!(
            w,
            "[network]\nauth_policy = {}\n",
            toml_string(&p.string("p"))
        );
    }
    for (i, p) in input.policies.iter().take(3).enumerate() {
        let _ = writeln!(w, "[[auth_policy]]\nname = {}", own("p", i, &p.name));
        if strict && p.statements.is_empty() {
            let _ = writeln!(w, "[[auth_policy.statement]]\neffect = \"allow\"");
        }
        for s in p.statements.iter().take(4) {
            let _ = writeln!(w, "[[auth_policy.statement]]");
            let _ = writeln!(w, "effect = {}", s.effect.toml());
            let strs = |v: &Vec<Str>| list(v.iter().take(4).map(Str::toml));
            if let Some(v) = s.principals.as_ref().filter(|v| !strict || !v.is_empty()) {
                let _ = writeln!(w, "principals = {}", strs(v));
            }
            if let Some(v) = s.source_cidrs.as_ref().filter(|v| !strict || !v.is_empty()) {
                let _ = writeln!(
                    w,
                    "source_cidrs = {}",
                    list(v.iter().take(4).map(|c| toml_string(&c.string())))
                );
            }
            if let Some(v) = s.methods.as_ref().filter(|v| !strict || !v.is_empty()) {
                let _ = writeln!(w, "methods = {}", list(v.iter().take(4).map(method)));
            }
            if let Some(v) = s.paths.as_ref().filter(|v| !strict || !v.is_empty()) {
                let _ = writeln!(w, "paths = {}", list(v.iter().take(4).map(path)));
            }
            let table = |v: &Vec<(Str, Str)>| {
                let pairs: Vec<String> = v
                    .iter()
                    .take(4)
                    .map(|(k, v)| format!("{} = {}", k.toml(), v.toml()))
                    .collect();
                format!("{{ {} }}", pairs.join(", "))
            };
            if let Some(v) = &s.headers {
                let _ = writeln!(w, "headers = {}", table(v));
            }
            if let Some(v) = &s.query {
                let _ = writeln!(w, "query = {}", table(v));
            }
        }
        let _ = writeln!(w);
    }
    for (i, s) in input.services.iter().take(3).enumerate() {
        let _ = writeln!(w, "[[service]]\nname = {}", own("s", i, &s.name));
        let mut hosts = vec![if strict {
            toml_string(&format!("s{i}.example"))
        } else {
            s.hosts.0.toml()
        }];
        for h in s.hosts.1.iter().take(if strict { 0 } else { 2 }) {
            let h = h.toml();
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        let _ = writeln!(w, "hosts = {}", list(hosts.into_iter()));
        if let Some(p) = s.auth_policy.as_ref().filter(|_| refs) {
            let _ = writeln!(w, "auth_policy = {}", toml_string(&p.string("p")));
        }
        for (k, l) in s.listeners.iter().take(2).enumerate() {
            let _ = writeln!(
                w,
                "  [[service.listener]]\n  name = {}",
                own("l", 10 * i + k, &l.name)
            );
            if strict {
                let _ = writeln!(w, "  protocol = \"http\"\n  port = {}", 8000 + 10 * i + k);
            } else {
                let _ = writeln!(w, "  protocol = {}", l.protocol.toml());
                let _ = writeln!(w, "  port = {}", l.port.toml());
            }
            let _ = writeln!(w, "  default_action = {}", l.default_action.toml());
            for (j, r) in l.rules.iter().take(4).enumerate() {
                let _ = writeln!(
                    w,
                    "    [[service.listener.rule]]\n    name = {}",
                    own("r", 100 * i + 10 * k + j, &r.name)
                );
                if strict {
                    let _ = writeln!(w, "    priority = {}", j + 1);
                } else {
                    let _ = writeln!(w, "    priority = {}", r.priority.toml());
                }
                let mut m = Vec::new();
                if let Some(method) = &r.method {
                    m.push(format!("method = {}", self::method(method)));
                }
                if let Some((exact, value, cs)) = &r.path {
                    let key = if *exact { "exact" } else { "prefix" };
                    let cs = cs.map_or(String::new(), |c| format!(", case_sensitive = {c}"));
                    m.push(format!("path = {{ {key} = {}{cs} }}", path(value)));
                }
                if let Some(hs) = &r.headers {
                    let hs: Vec<String> = hs
                        .iter()
                        .take(if strict { 5 } else { 6 })
                        .map(|h| {
                            let key = ["exact", "prefix", "contains"][usize::from(h.kind % 3)];
                            let cs = h
                                .case_sensitive
                                .map_or(String::new(), |c| format!(", case_sensitive = {c}"));
                            format!(
                                "{{ name = {}, {key} = {}{cs} }}",
                                h.name.toml(),
                                h.value.toml()
                            )
                        })
                        .collect();
                    m.push(format!("headers = [{}]", hs.join(", ")));
                }
                let _ = writeln!(w, "    match = {{ {} }}", m.join(", "));
                let _ = writeln!(w, "    action = {}", r.action.toml());
            }
        }
        let _ = writeln!(w);
    }
    for (i, g) in input.groups.iter().enumerate() {
        let _ = writeln!(w, "[[target_group]]\nname = {}", own("g", i, &g.name));
        if let Some(p) = g.protocol.as_ref().filter(|_| !strict) {
            let _ = writeln!(w, "protocol = {}", p.toml());
        }
        let targets = g.targets.iter().take(3).map(|(a, port)| {
            let port = if strict { (*port).max(1) } else { *port };
            toml_string(&format!("{}:{port}", std::net::Ipv4Addr::from(*a)))
        });
        let _ = writeln!(w, "targets = {}\n", list(targets));
    }
    if let Some(extra) = input.extra.as_ref().filter(|_| !strict) {
        let _ = writeln!(w, "{extra}");
    }
    f
}

fuzz_target!(|input: Input| {
    STRICT.with(|s| s.set(input.strict));
    let text = write_file(&input);
    let Some(config) = parse_checked(&text) else {
        return;
    };
    let cidrs: Vec<Cidr> = config
        .auth_policies
        .iter()
        .flat_map(|p| &p.statements)
        .flat_map(|s| s.source_cidrs.iter().copied())
        .collect();
    for r in input.requests.iter().take(3) {
        let Some((req, ip, identity)) = r.build(&cidrs) else {
            continue;
        };
        let id = identity.as_ref();
        for rule in config
            .services
            .iter()
            .flat_map(|s| &s.listeners)
            .flat_map(|l| &l.rules)
        {
            let (method, path, headers) = (req.method(), req.uri().path(), req.headers());
            assert_eq!(
                rule_matches(&rule.matcher, method, path, headers),
                rule_model(&rule.matcher, method, path, headers),
                "{:?} on {req:?}\n{text}",
                rule.matcher
            );
        }
        for p in &config.auth_policies {
            assert_eq!(
                policy_allows(p, &req, ip, id),
                policy_model(p, &req, ip, id.map(|v| v.as_bytes())),
                "{p:#?}\n{req:?} from {ip} as {identity:?}\n{text}"
            );
        }
    }
});
