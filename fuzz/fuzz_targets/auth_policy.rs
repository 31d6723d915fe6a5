//! Auth policies: `Policy::compile` + `evaluate` (via `fuzzing::policy_allows`) agree with a plain model
//! of IAM's evaluation (the first matching deny statement denies, else a matching allow allows, else
//! nothing allowed it) on every request; one empty allow statement allows everything; an empty deny
//! statement appended always denies (by an earlier deny that matched, or by itself); an empty allow
//! appended allows everything no deny statement matched.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trellis_config::{AuthPolicy, Cidr, Effect, Statement};
use trellis_fuzz::{policy_model, RequestIn, StatementIn};
use trellis_proxy::fuzzing::{policy_allows, Denial};

#[derive(Arbitrary, Debug)]
struct Input {
    statements: Vec<StatementIn>,
    requests: Vec<RequestIn>,
}

fn with(policy: &AuthPolicy, effect: Effect) -> AuthPolicy {
    let mut p = policy.clone();
    p.statements.push(Statement {
        effect,
        ..Statement::default()
    });
    p
}

fuzz_target!(|input: Input| {
    let policy = AuthPolicy {
        name: "p".into(),
        statements: input
            .statements
            .iter()
            .take(6)
            .map(StatementIn::statement)
            .collect(),
    };
    let cidrs: Vec<Cidr> = policy
        .statements
        .iter()
        .flat_map(|s| s.source_cidrs.iter().copied())
        .collect();
    let open = AuthPolicy {
        name: "open".into(),
        statements: vec![Statement::default()],
    };
    let deny_all = with(&policy, Effect::Deny);
    let allow_rest = with(&policy, Effect::Allow);
    let n = policy.statements.len();
    for r in input.requests.iter().take(4) {
        let Some((req, ip, identity)) = r.build(&cidrs) else {
            continue;
        };
        let id = identity.as_ref();
        let got = policy_allows(&policy, &req, ip, id);
        let want = policy_model(&policy, &req, ip, id.map(|v| v.as_bytes()));
        assert_eq!(got, want, "{policy:#?}\n{req:?} from {ip} as {identity:?}");
        assert_eq!(policy_allows(&open, &req, ip, id), Ok(()));
        let denied = policy_allows(&deny_all, &req, ip, id);
        match got {
            Err(Denial::Statement(i)) => {
                assert_eq!(denied, Err(Denial::Statement(i)));
                assert_eq!(
                    policy_allows(&allow_rest, &req, ip, id),
                    Err(Denial::Statement(i))
                );
            }
            _ => {
                assert_eq!(denied, Err(Denial::Statement(n)));
                assert_eq!(policy_allows(&allow_rest, &req, ip, id), Ok(()));
            }
        }
    }
});
