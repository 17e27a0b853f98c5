//! Request bodies as the dialects read them: bounded by the configured limit, refused unread
//! when the declared length is already too large, and decoded as JSON only when the client
//! says (or leaves unsaid) that it is JSON.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::idle::IdleError;

/// Why a body could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    /// The client stopped sending its body (`server.body_idle_timeout_secs`).
    #[error("the client sent nothing of its request body for {0:?}")]
    Stalled(Duration),
    #[error("the Content-Type is not JSON")]
    NotJson,
    #[error("the request body is not valid JSON")]
    Malformed,
}

/// Longest header value accepted, as Nova's own server (`max_header_line`). The whole head is
/// bounded before this by hyper (`server.max_header_bytes`, a 431).
pub const MAX_HEADER_VALUE: usize = 16 * 1024;

/// Refuses oversized headers, so that none is forwarded, logged or parsed: the name of the
/// first header that is too long.
pub fn oversized_header(headers: &HeaderMap) -> Option<String> {
    headers.iter().find(|(_, value)| value.len() > MAX_HEADER_VALUE).map(|(name, _)| name.to_string())
}

/// The body's declared length, if it declares one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads a body, refusing a declared length over `limit` without reading it and stopping as
/// soon as a chunked body grows past it.
pub async fn read(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, BodyError> {
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => match IdleError::stalled_in(&*e) {
            Some(idle) => Err(BodyError::Stalled(idle)),
            None => Err(BodyError::Unreadable(e.to_string())),
        },
    }
}

/// Decodes a JSON body. A missing Content-Type, or one of `also_json`, counts as JSON; an
/// empty body is `null`.
pub fn json(headers: &HeaderMap, bytes: &[u8], also_json: &[&str]) -> Result<Value, BodyError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media.as_deref() {
        None | Some("" | "application/json") => {}
        Some(other) if also_json.contains(&other) => {}
        Some(_) => return Err(BodyError::NotJson),
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|_| BodyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let ok = read(&HeaderMap::new(), Body::from("12345"), 5).await.unwrap();
        assert_eq!(&ok[..], b"12345");
        let chunked = read(&HeaderMap::new(), Body::from("123456"), 5).await;
        assert!(matches!(chunked, Err(BodyError::TooLarge(5))));
        let declared = read(&headers(&[("content-length", "999")]), Body::empty(), 5).await;
        assert!(matches!(declared, Err(BodyError::TooLarge(5))));
    }

    #[test]
    fn json_by_content_type() {
        assert_eq!(json(&HeaderMap::new(), b"{\"a\":1}", &[]).unwrap()["a"], 1);
        assert_eq!(
            json(&headers(&[("content-type", "application/json; charset=UTF-8")]), b"", &[]).unwrap(),
            Value::Null
        );
        assert!(matches!(json(&headers(&[("content-type", "text/plain")]), b"{}", &[]), Err(BodyError::NotJson)));
        assert!(json(&headers(&[("content-type", "text/plain")]), b"{}", &["text/plain"]).is_ok());
        assert!(matches!(json(&HeaderMap::new(), b"{bad", &[]), Err(BodyError::Malformed)));
    }
}
