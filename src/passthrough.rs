//! Passthrough: requests no dialect claims, forwarded to the service behind the gateway (Nova
//! for the compute mounts, Glance for the image mount) as a reverse proxy would.
//!
//! Bodies stream in both directions, never buffered, so an image upload or download costs the
//! gateway a few buffers whatever its size. Hop-by-hop headers are dropped (RFC 9110 §7.6.1),
//! `X-Forwarded-For`, `-Proto` and `-Host` are set, and a `Location` pointing at the upstream is
//! rewritten to the address the client used.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::glance::UpstreamError;

/// Headers that describe one connection, not the message (plus those `Connection` names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One upstream to forward to.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: reqwest::Client,
    base: Url,
}

impl Upstream {
    /// `idle_timeout` bounds the wait for each piece of an answer, not the whole transfer, so a
    /// large image can stream for as long as it keeps moving.
    pub fn new(base: Url, connect_timeout: Duration, idle_timeout: Duration) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()?;
        Ok(Upstream { client, base })
    }

    /// Forwards `req` to `path_and_query` below the upstream's base. `public_base` is what the
    /// upstream's own base becomes in a rewritten `Location`.
    pub async fn forward(
        &self,
        req: Request,
        path_and_query: &str,
        public_base: &str,
    ) -> Result<Response, UpstreamError> {
        let (parts, body) = req.into_parts();
        let base = self.base.as_str().trim_end_matches('/');
        let url = format!("{base}{path_and_query}");
        let mut headers = strip_hop_by_hop(&parts.headers);
        headers.remove(header::HOST);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        add_forwarded(&mut headers, &parts.headers, peer, public_base);
        let request = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()));
        let upstream = request.send().await.map_err(|e| {
            if e.is_timeout() {
                UpstreamError::Timeout(Duration::ZERO)
            } else if e.is_connect() {
                UpstreamError::Unreachable(e.without_url().to_string())
            } else {
                UpstreamError::BadAnswer(e.without_url().to_string())
            }
        })?;
        let mut response = Response::builder().status(upstream.status());
        let mut out_headers = strip_hop_by_hop(upstream.headers());
        if let Some(location) = out_headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            if let Some(rest) = location.strip_prefix(base) {
                if let Ok(rewritten) = HeaderValue::from_str(&format!("{public_base}{rest}")) {
                    out_headers.insert(header::LOCATION, rewritten);
                }
            }
        }
        if let Some(h) = response.headers_mut() {
            *h = out_headers;
        }
        response.body(Body::from_stream(upstream.bytes_stream())).map_err(|e| UpstreamError::BadAnswer(e.to_string()))
    }
}

fn strip_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = headers.clone();
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        out.remove(name);
    }
    out
}

/// Appends the peer to `X-Forwarded-For`; says which scheme and host the client used.
fn add_forwarded(out: &mut HeaderMap, incoming: &HeaderMap, peer: Option<std::net::IpAddr>, public_base: &str) {
    if let Some(peer) = peer {
        let chain = match incoming.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            out.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    let proto = if public_base.starts_with("https://") { "https" } else { "http" };
    out.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(proto));
    if let Some(host) = incoming.get(header::HOST) {
        out.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let h = headers(&[
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-auth-token", "t"),
        ]);
        let out = strip_hop_by_hop(&h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("x-auth-token"));
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut out = HeaderMap::new();
        let incoming = headers(&[("host", "gw.example"), ("x-forwarded-for", "192.0.2.7")]);
        add_forwarded(&mut out, &incoming, Some("10.0.0.2".parse().unwrap()), "https://gw.example");
        assert_eq!(out["x-forwarded-for"], "192.0.2.7, 10.0.0.2");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "gw.example");
    }
}
