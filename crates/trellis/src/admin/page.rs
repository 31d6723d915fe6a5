//! `GET /`: the status page. One self-contained HTML file (inline CSS and JS, no external asset, so it
//! works where the daemon has no internet) that polls `/v1/status` from the browser every 2 s.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::Full;

const PAGE: &str = include_str!("page.html");

/// The page, never cached: an upgraded daemon serves its own.
pub fn page() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
