//! deploy/loadtest's mixes against trellis: every request of `mix.requests` and `mix-post.requests` reaches
//! the backend its EXPECT names through `trellis-mix.toml.tmpl`, as run.sh checks before measuring. Here
//! it runs in CI, so an edit to the template or to a request list that breaks the routing the load test
//! claims to measure fails a test, not a benchmark run. (nginx and HAProxy are checked by run.sh itself.)

use std::collections::BTreeMap;

use super::repo;
use crate::support::client::{send, url};
use crate::support::{free_port, Echo, Options, Trellis};

/// One line of a request list: `METHOD HOST PATH BODY_BYTES EXPECT [NAME:VALUE ...]`.
struct Request {
    method: reqwest::Method,
    host: String,
    path: String,
    body: usize,
    expect: String,
    headers: Vec<(String, String)>,
}

fn requests(file: &str) -> Vec<Request> {
    let text = std::fs::read_to_string(repo().join("deploy/loadtest").join(file))
        .unwrap_or_else(|e| panic!("read {file}: {e}"));
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 5, "{file}: {line:?}");
            let headers = f[5..]
                .iter()
                .map(|h| {
                    let (name, value) = h.split_once(':').expect("NAME:VALUE");
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            Request {
                method: f[0].parse().expect("a method"),
                host: f[1].to_owned(),
                path: f[2].to_owned(),
                body: f[3].parse().expect("BODY_BYTES"),
                expect: f[4].to_owned(),
                headers,
            }
        })
        .collect()
}

impl Request {
    async fn send(&self, client: &reqwest::Client, port: u16) -> crate::support::client::Reply {
        let mut req = client
            .request(self.method.clone(), url(port, &self.path))
            .header("host", &self.host);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        if self.body > 0 {
            req = req.body(vec![b'a'; self.body]);
        }
        send(req).await
    }
}

async fn check_mix(file: &str) {
    let names = ["web", "static", "api-v1", "api-v2"];
    let mut backends = Vec::new();
    for name in names {
        backends.push(Echo::start(name).await);
    }
    let (port, admin) = (free_port(), free_port());
    let mut config = std::fs::read_to_string(repo().join("deploy/loadtest/trellis-mix.toml.tmpl"))
        .expect("read trellis-mix.toml.tmpl")
        .replace("@PROXY_PORT@", &port.to_string())
        .replace("@ADMIN_PORT@", &admin.to_string());
    for (name, echo) in names.iter().zip(&backends) {
        let placeholder = format!("@PORT_{}@", name.to_uppercase().replace('-', "_"));
        config = config.replace(&placeholder, &echo.port.to_string());
    }
    let _trellis = Trellis::start_with(&config, &[port], Options::single_worker()).await;
    let client = crate::support::client::http1();

    let mut split = None;
    for req in requests(file) {
        let reply = req.send(&client, port).await;
        let what = format!("{file}: {} {}{}", req.method, req.host, req.path);
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        let served = reply.header("x-served-by").map(str::to_owned);
        if let Some(body) = req.expect.strip_prefix('=') {
            assert_eq!((reply.text().as_str(), served), (body, None), "{what}");
        } else if req.expect.contains(',') {
            let served = served.unwrap_or_default();
            assert!(
                req.expect.contains(&format!("{served}:")),
                "{what}: {served}"
            );
            split.get_or_insert(req);
        } else {
            assert_eq!(served.as_deref(), Some(req.expect.as_str()), "{what}");
        }
    }

    // The split's shares: trellis's smooth weighted round robin is exact over whole cycles (one worker).
    let req = split.expect("the mix has a weighted split");
    let weights: BTreeMap<String, u32> = req
        .expect
        .split(',')
        .map(|g| {
            let (name, weight) = g.split_once(':').expect("GROUP:WEIGHT");
            (name.to_owned(), weight.parse().expect("a weight"))
        })
        .collect();
    let total: u32 = weights.values().sum();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..total * 2 {
        let reply = req.send(&client, port).await;
        *counts.entry(reply.served_by()).or_default() += 1;
    }
    let want: BTreeMap<String, u32> = weights.into_iter().map(|(n, w)| (n, w * 2)).collect();
    assert_eq!(
        counts, want,
        "{file}: {} {}{}",
        req.method, req.host, req.path
    );
}

#[tokio::test]
async fn loadtest_mix_routes_every_request_to_its_expected_backend() {
    check_mix("mix.requests").await;
}

#[tokio::test]
async fn loadtest_mix_post_routes_every_request_to_its_expected_backend() {
    check_mix("mix-post.requests").await;
}
