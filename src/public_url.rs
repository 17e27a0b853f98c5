//! The address clients use to reach the gateway, for every link it writes.

use http::{header, HeaderMap};

/// The configured public URL (scheme, host and any path prefix, no trailing slash), or else
/// `http://` and the request's `Host`. A `Host` that is not a valid authority is never put in
/// a link.
pub fn origin(public_url: Option<&str>, headers: &HeaderMap) -> String {
    match public_url {
        Some(url) => url.to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.parse::<http::uri::Authority>().is_ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_url_wins_and_bad_hosts_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "gw.example:8774".parse().unwrap());
        assert_eq!(origin(Some("https://cloud/compute"), &h), "https://cloud/compute");
        assert_eq!(origin(None, &h), "http://gw.example:8774");
        h.insert(header::HOST, "evil/path?x".parse().unwrap());
        assert_eq!(origin(None, &h), "http://localhost");
    }
}
