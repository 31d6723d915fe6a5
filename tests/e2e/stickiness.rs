//! `[target_group.stickiness]` and `slow_start`: a client kept on one target by a cookie (trellis's own,
//! or following the application's), replaced when that target goes; and a target that joins getting a
//! small share first and its fair one after the window.

use std::time::Duration;

use crate::support::client::{self, tally, Reply};
use crate::support::servers::{self, Tracking};
use crate::support::Trellis;

/// trellis forwarding everything to group `web`, which starts empty: targets come through the API.
async fn proxy(tg_extra: &str) -> (Trellis, u16) {
    Trellis::shop_to_web("[]", tg_extra).await
}

/// `NAME=VALUE` of the cookie `name` a response sets, if it does.
fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

async fn get_with_cookie(port: u16, path: &str, cookie: &str) -> Reply {
    let http = client::http1();
    client::send(http.get(client::url(port, path)).header("cookie", cookie)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_keeps_a_client_on_its_target_until_that_target_leaves() {
    let backends = [
        Tracking::start("a").await,
        Tracking::start("b").await,
        Tracking::start("c").await,
    ];
    let (trellis, port) = proxy(
        "deregistration_delay = \"0s\"\n[target_group.stickiness]\ntype = \"lb_cookie\"\nduration = \"1h\"\n",
    )
    .await;
    for b in &backends {
        assert_eq!(trellis.register("web", &b.addr(), 1).await.0, 201);
    }

    let first = client::get(&client::http1(), port, "/").await;
    let cookie = set_cookie(&first, "trellis-tg-web").expect("trellis sets its cookie");
    let header = first.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        header.contains("Max-Age=3600") && header.contains("HttpOnly"),
        "{header}"
    );
    // The cookie names the target by a hash, not by its address.
    assert!(!cookie.contains("127.0.0.1"), "{cookie}");
    let target = first.served_by();

    let mut served = Vec::new();
    for _ in 0..20 {
        let reply = get_with_cookie(port, "/", &format!("other=1; {cookie}")).await;
        assert_eq!(
            set_cookie(&reply, "trellis-tg-web").as_deref(),
            Some(cookie.as_str())
        );
        served.push(reply.served_by());
    }
    assert_eq!(tally(&served).get(&target), Some(&20), "{served:?}");

    // The target leaves: the same cookie is balanced to another one, and the cookie follows it.
    let leaving = backends.iter().find(|b| b.name == target).unwrap();
    assert_eq!(trellis.deregister("web", &leaving.addr()).await.0, 200);
    crate::support::eventually(Duration::from_secs(10), "the target gone", || async {
        let reply = get_with_cookie(port, "/", &cookie).await;
        (reply.served_by() != target).then_some(reply)
    })
    .await;
    let reply = get_with_cookie(port, "/", &cookie).await;
    let moved = set_cookie(&reply, "trellis-tg-web").expect("a new cookie");
    assert_ne!(moved, cookie);
    let now = reply.served_by();
    for _ in 0..5 {
        assert_eq!(get_with_cookie(port, "/", &moved).await.served_by(), now);
    }
    let metric =
        |r: &str| format!("trellis_sticky_requests_total{{result=\"{r}\",target_group=\"web\"}}");
    assert!(trellis.metric(&metric("hit")).await >= Some(25.0));
    assert!(trellis.metric(&metric("miss")).await >= Some(1.0));
    assert_eq!(trellis.metric(&metric("new")).await, Some(1.0));
    let status = trellis.status().await;
    assert_eq!(
        status["target_groups"][0]["stickiness"],
        serde_json::json!({"type": "lb_cookie", "cookie_name": null, "duration": "1h"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_cookie_session_sticks_once_the_application_sets_its_cookie() {
    let a = servers::session("a").await;
    let b = servers::session("b").await;
    let (trellis, port) = proxy(
        "[target_group.stickiness]\ntype = \"app_cookie\"\ncookie_name = \"SESSIONID\"\nduration = \"10m\"\n",
    )
    .await;
    for s in [&a, &b] {
        assert_eq!(trellis.register("web", &s.addr(), 1).await.0, 201);
    }
    // No session yet: no cookie of trellis's, requests are balanced.
    let plain = client::get(&client::http1(), port, "/").await;
    assert_eq!(set_cookie(&plain, "trellis-app-web"), None);
    // The application starts a session: trellis adds its own cookie beside the application's.
    let login = client::get(&client::http1(), port, "/login").await;
    let app = set_cookie(&login, "SESSIONID").expect("the application's cookie");
    let ours = set_cookie(&login, "trellis-app-web").expect("trellis's cookie");
    let target = login.served_by();
    let cookies = format!("{app}; {ours}");
    for _ in 0..10 {
        let reply = get_with_cookie(port, "/", &cookies).await;
        assert_eq!(reply.served_by(), target);
        // Only responses that set the application's cookie carry trellis's.
        assert_eq!(set_cookie(&reply, "trellis-app-web"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_joins_gets_a_small_share_first_and_its_fair_share_after_slow_start() {
    let old = Tracking::start("old").await;
    let new = Tracking::start("new").await;
    let (trellis, port) = proxy("slow_start = \"4s\"\n").await;
    assert_eq!(
        trellis.status().await["target_groups"][0]["slow_start"],
        "4s"
    );
    assert_eq!(trellis.register("web", &old.addr(), 1).await.0, 201);
    // Slow start is about time passing: the first target's own window must be over before the second
    // one joins, and nothing but the clock says when it is.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(trellis.register("web", &new.addr(), 1).await.0, 201);

    let http = client::http1();
    let batch = |n: usize| {
        let http = http.clone();
        async move {
            let mut served = Vec::new();
            for _ in 0..n {
                served.push(client::get(&http, port, "/").await.served_by());
            }
            tally(&served).get("new").copied().unwrap_or(0)
        }
    };
    // Just joined: about 5% of its weight, growing; well under its fair half.
    let first = batch(200).await;
    assert!(first < 60, "{first} of 200 to the new target");
    assert!(first > 0, "in slow start, not out of rotation");
    // After the window: its fair share.
    let fair = crate::support::eventually(Duration::from_secs(15), "a fair share", || async {
        let n = batch(200).await;
        (n >= 80).then_some(n)
    })
    .await;
    assert!(fair <= 120, "{fair} of 200");
}
