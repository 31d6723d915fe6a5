//! A rule's transform, compiled once per snapshot: header names and values parsed, the length of what
//! the rule's path prefix matches known.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Request;
use trellis_config::{self as config, HeaderEdits, StringMatchKind};

use crate::error::Failure;

pub struct Transform {
    /// How many bytes of the path the rule's prefix matched, and what replaces them.
    path: Option<(usize, Box<str>)>,
    request: Edits,
    /// `None` when it changes nothing; shared with the requests in flight (they outlive the snapshot).
    pub response: Option<Arc<Edits>>,
}

/// Header changes, in the order applied.
pub struct Edits {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl Transform {
    /// `matcher`: the rule's (validation allows `path_prefix` only with a prefix match).
    pub fn build(t: &config::Transform, matcher: &config::Match) -> Self {
        let matched = matcher
            .path
            .as_ref()
            .filter(|p| p.kind == StringMatchKind::Prefix)
            .map(|p| p.value.len());
        let response = Edits::build(&t.response_headers);
        Transform {
            path: matched.zip(t.path_prefix.as_deref().map(Box::from)),
            request: Edits::build(&t.request_headers),
            response: (!t.response_headers.is_empty()).then(|| Arc::new(response)),
        }
    }

    /// Makes `req` the request the target gets. `stripped` is the path's parameter-stripped view when
    /// that is what the rule matched: the prefix is replaced in the view trellis decided on.
    pub fn apply_request<B>(
        &self,
        req: &mut Request<B>,
        stripped: Option<&str>,
    ) -> Result<(), Failure> {
        if let Some((matched, prefix)) = &self.path {
            let view = stripped.unwrap_or(req.uri().path());
            let path = replace_prefix(view, *matched, prefix)?;
            set_path(req, path)?;
        }
        self.request.claim_from_connection(req.headers_mut());
        self.request.apply(req.headers_mut());
        Ok(())
    }

    /// Whether the request's path changes (so that the access log shows the new one).
    pub fn rewrites_path(&self) -> bool {
        self.path.is_some()
    }
}

/// `prefix` in place of the first `matched` bytes of `view`, without a `//` where they meet.
fn replace_prefix(view: &str, matched: usize, prefix: &str) -> Result<String, Failure> {
    let rest = view.get(matched..).unwrap_or("");
    let rest = match (prefix.ends_with('/'), rest.strip_prefix('/')) {
        (true, Some(after)) => after,
        _ => rest,
    };
    let mut path = String::with_capacity(prefix.len() + rest.len());
    path.push_str(prefix);
    path.push_str(rest);
    if path.is_empty() {
        path.push('/');
    }
    // The prefix is normalised (validation) and so is the rest, but where they meet a segment can
    // become `..` (`/files/a` matched in `/files/a../x`, replaced by `/static/`): the target would
    // then get a path trellis did not decide on.
    match crate::head::path::normalize(&path) {
        Ok(None) => Ok(path),
        _ => Err(Failure::BadRequest(
            "the path is not normalised once its rule replaces its prefix",
        )),
    }
}

/// The request's path replaced, its query (and any scheme and authority) kept.
fn set_path<B>(req: &mut Request<B>, mut path: String) -> Result<(), Failure> {
    if let Some(query) = req.uri().query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(path).map_err(|_| Failure::BadRequest("bad path"))?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| Failure::BadRequest("bad path"))?;
    Ok(())
}

impl Edits {
    fn build(e: &HeaderEdits) -> Self {
        // Validation checked every name and value, so none is dropped here.
        let pairs = |list: &[(String, String)]| -> Box<[(HeaderName, HeaderValue)]> {
            list.iter()
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        };
        Edits {
            remove: e
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: pairs(&e.set),
            add: pairs(&e.add),
        }
    }

    /// `remove`, then `set` (replacing every value), then `add`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in self.add.iter() {
            headers.append(name.clone(), value.clone());
        }
    }

    /// A header the client names in `Connection` is dropped on the way to the target (RFC 9110
    /// §7.6.1), and would take a value set or added here with it: a client could undo the transform.
    /// Such a header is the transform's, so it leaves `Connection`, and the client's values go.
    fn claim_from_connection(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(header::CONNECTION) {
            return;
        }
        let ours = |token: &str| {
            self.set
                .iter()
                .chain(self.add.iter())
                .any(|(name, _)| token.eq_ignore_ascii_case(name.as_str()))
        };
        let tokens: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or_default().split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if !tokens.iter().any(|t| ours(t)) {
            return;
        }
        let (claimed, kept): (Vec<String>, Vec<String>) = tokens.into_iter().partition(|t| ours(t));
        for name in claimed {
            headers.remove(name.as_str());
        }
        headers.remove(header::CONNECTION);
        if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
            if !kept.is_empty() {
                headers.insert(header::CONNECTION, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The transform of the one rule of a listener, `matches` its `match.path`.
    fn transform(matches: &str, transform: &str) -> Transform {
        let text = format!(
            "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"l\"\n\
             protocol = \"http\"\nport = 8080\ndefault_action = {{ fixed_response = {{ status = 404 }} }}\n\
             [[service.listener.rule]]\nname = \"r\"\npriority = 1\nmatch = {{ path = {matches} }}\n\
             action = {{ forward = [{{ target_group = \"g\" }}] }}\ntransform = {transform}\n\
             [[target_group]]\nname = \"g\"\ntargets = [\"127.0.0.1:9\"]\n"
        );
        let config = config::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let rule = &config.services[0].listeners[0].rules[0];
        Transform::build(rule.transform.as_ref().expect("a transform"), &rule.matcher)
    }

    fn rewritten(t: &Transform, uri: &str, stripped: Option<&str>) -> Result<String, Failure> {
        let mut req = Request::get(uri).body(()).unwrap();
        t.apply_request(&mut req, stripped)?;
        Ok(req.uri().to_string())
    }

    #[test]
    fn the_matched_prefix_is_replaced_and_the_query_kept() {
        let t = transform("{ prefix = \"/API/\" }", "{ path_prefix = \"/v2/\" }");
        assert_eq!(
            rewritten(&t, "/api/users?id=1", None),
            Ok("/v2/users?id=1".into())
        );
        assert_eq!(rewritten(&t, "/api/", None), Ok("/v2/".into()));
        let t = transform("{ prefix = \"/api\" }", "{ path_prefix = \"/\" }");
        assert_eq!(rewritten(&t, "/api/users", None), Ok("/users".into()));
        assert_eq!(rewritten(&t, "/api", None), Ok("/".into()));
        assert_eq!(rewritten(&t, "/apix", None), Ok("/x".into()));
        let t = transform("{ prefix = \"/api/\" }", "{ path_prefix = \"/v2\" }");
        assert_eq!(rewritten(&t, "/api/users", None), Ok("/v2users".into()));
        // Absolute-form URIs keep their scheme and authority.
        assert_eq!(
            rewritten(&t, "http://a.test/api/x?q", None),
            Ok("http://a.test/v2x?q".into())
        );
    }

    #[test]
    fn the_view_that_matched_is_rewritten() {
        let t = transform("{ prefix = \"/api/\" }", "{ path_prefix = \"/v2/\" }");
        assert_eq!(
            rewritten(&t, "/api;v=1/users?q=1", Some("/api/users")),
            Ok("/v2/users?q=1".into())
        );
    }

    #[test]
    fn a_rewrite_that_leaves_the_path_unnormalised_is_refused() {
        let t = transform(
            "{ prefix = \"/files/a\" }",
            "{ path_prefix = \"/static/\" }",
        );
        assert!(matches!(
            rewritten(&t, "/files/a../etc", None),
            Err(Failure::BadRequest(_))
        ));
        assert_eq!(rewritten(&t, "/files/a/b", None), Ok("/static/b".into()));
    }

    #[test]
    fn headers_are_removed_set_and_added() {
        let t = transform(
            "{ prefix = \"/\" }",
            "{ request_headers = { set = { \"x-env\" = \"prod\" }, add = { \"x-tag\" = \"b\" }, remove = [\"x-debug\"] } }",
        );
        let mut req = Request::get("/")
            .header("x-env", "dev")
            .header("x-env", "test")
            .header("x-tag", "a")
            .header("x-debug", "1")
            .body(())
            .unwrap();
        t.apply_request(&mut req, None).unwrap();
        let all = |name: &str| -> Vec<&str> {
            req.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-env"), ["prod"]);
        assert_eq!(all("x-tag"), ["a", "b"]);
        assert!(all("x-debug").is_empty());
        assert!(t.response.is_none());
    }

    #[test]
    fn a_client_cannot_drop_a_set_header_by_naming_it_in_connection() {
        let t = transform(
            "{ prefix = \"/\" }",
            "{ request_headers = { set = { \"x-env\" = \"prod\" }, add = { \"x-tag\" = \"b\" } } }",
        );
        let mut req = Request::get("/")
            .header("connection", "X-Env, keep-alive")
            .header("connection", "x-tag")
            .header("x-env", "dev")
            .header("x-tag", "a")
            .body(())
            .unwrap();
        t.apply_request(&mut req, None).unwrap();
        let h = req.headers();
        assert_eq!(h["connection"], "keep-alive");
        assert_eq!(h["x-env"], "prod");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["b"]);
    }

    /// Validation's list of what a transform may not touch covers every header trellis sets itself.
    #[test]
    fn the_headers_trellis_sets_are_refused() {
        use crate::headers::*;
        let parses = |side: &str, name: &str| {
            let text = format!(
                "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"l\"\n\
                 protocol = \"http\"\nport = 8080\ndefault_action = {{ forward = [{{ target_group = \"g\" }}] }}\n\
                 [[service.listener.rule]]\nname = \"r\"\npriority = 1\n\
                 action = {{ forward = [{{ target_group = \"g\" }}] }}\n\
                 transform = {{ {side} = {{ set = {{ \"{name}\" = \"x\" }} }} }}\n\
                 [[target_group]]\nname = \"g\"\ntargets = [\"127.0.0.1:9\"]\n"
            );
            config::parse(&text, Path::new("t.toml")).is_ok()
        };
        assert!(parses("request_headers", "x-env") && parses("response_headers", "x-env"));
        for name in [
            &X_FORWARDED_PROTO,
            &X_FORWARDED_PORT,
            &X_FORWARDED_FOR,
            &X_REQUEST_ID,
            &X_TRELLIS_TARGET,
            &X_TRELLIS_IDENTITY,
            &X_TRELLIS_ERROR,
            &header::HOST,
            &header::CONTENT_LENGTH,
            &header::TRANSFER_ENCODING,
        ] {
            for side in ["request_headers", "response_headers"] {
                assert!(!parses(side, name.as_str()), "{side} may set {name}");
            }
        }
    }

    #[test]
    fn response_edits() {
        let t = transform(
            "{ prefix = \"/\" }",
            "{ response_headers = { set = { \"x-frame-options\" = \"DENY\" }, remove = [\"server\"] } }",
        );
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("x"));
        h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        t.response.as_ref().expect("response edits").apply(&mut h);
        assert!(!h.contains_key("server"));
        assert_eq!(h["x-frame-options"], "DENY");
    }
}
