//! Nova's errors, and the one place they become responses.
//!
//! Nova answers a failed call with a fault body `{"<name>": {"code": <int>, "message": ...}}`
//! whose name follows the status; a path or method no route claims gets a bare WebOb 404
//! instead. Everything a Nova handler can fail with is a [`NovaError`]; every status the
//! dialect answers is decided here: Glance's refusals per call ([`GlanceCall`]'s table), and
//! every error's status ([`NovaError::status`]).

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::admission::Busy;
use crate::body::BodyError;
use crate::glance::UpstreamError;
use crate::mapping::RenderError;

use super::microversion::VersionError;

/// WebOb's default explanation for a 404, which Nova keeps when it gives none.
pub const NOT_FOUND_DEFAULT: &str = "The resource could not be found.";

/// How WebOb renders its own error pages, chosen from the request's `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    Html,
    Json,
    Text,
}

impl PageFormat {
    /// HTML unless the client asks for JSON or plain text without also accepting HTML.
    pub fn negotiate(headers: &http::HeaderMap) -> PageFormat {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let offers = |kind: &str| accept.split(',').any(|part| part.trim().starts_with(kind));
        if offers("text/html") || offers("*/*") || accept.is_empty() {
            PageFormat::Html
        } else if offers("application/json") {
            PageFormat::Json
        } else if offers("text/plain") {
            PageFormat::Text
        } else {
            PageFormat::Html
        }
    }
}

/// The Glance calls whose refusals Nova reports in words of its own (its `_translate_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlanceCall {
    List,
    Get,
    Patch,
    Delete,
}

/// What Nova says for one Glance status.
#[derive(Clone, Copy, Debug)]
enum Says {
    Unauthorized,
    NotFound(&'static str),
    Forbidden(&'static str),
    /// `Not authorized for image <id>.`
    NotAuthorizedForImage,
    /// Glance's own message as glanceclient quotes it ([`glanceclient_text`]), with this status.
    Quoting(StatusCode),
}

impl GlanceCall {
    /// Glance's statuses that Nova translates for this call; any other becomes
    /// [`NovaError::Upstream`] (a 4xx of those: 500, as Nova).
    fn table(self) -> &'static [(u16, Says)] {
        const IMAGE_NOT_FOUND: Says = Says::NotFound("Image not found.");
        match self {
            GlanceCall::List => &[
                (400, Says::Quoting(StatusCode::BAD_REQUEST)),
                (401, Says::Unauthorized),
                (403, Says::Quoting(StatusCode::FORBIDDEN)),
            ],
            GlanceCall::Get => &[
                (400, Says::Quoting(StatusCode::BAD_REQUEST)),
                (401, Says::Unauthorized),
                (403, Says::NotAuthorizedForImage),
                (404, IMAGE_NOT_FOUND),
            ],
            GlanceCall::Patch => &[
                (400, Says::Quoting(StatusCode::BAD_REQUEST)),
                (401, Says::Unauthorized),
                (403, Says::NotAuthorizedForImage),
                (404, IMAGE_NOT_FOUND),
                (409, Says::Quoting(StatusCode::CONFLICT)),
                // Glance's own property quota (image_property_quota).
                (413, Says::Forbidden("Image metadata limit exceeded")),
            ],
            GlanceCall::Delete => &[
                (401, Says::Unauthorized),
                // Glance says 403 for someone else's image and for a protected one alike.
                (403, Says::Forbidden("You are not allowed to delete the image.")),
                (404, IMAGE_NOT_FOUND),
                (409, Says::Quoting(StatusCode::CONFLICT)),
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NovaError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Unsupported Content-Type")]
    UnsupportedMediaType,
    /// Glance refused the caller's credentials. Behind Nova, its auth middleware would have
    /// refused them first, with a 401 that makes clients authenticate again.
    #[error("Authentication required")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// No route for this path and method: WebOb's own 404 page, not a fault.
    #[error("no route")]
    NoRoute(PageFormat),
    #[error(transparent)]
    Version(#[from] VersionError),
    /// Glance failed in a way the route does not translate for the client.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Glance's answer could not be shaped into Nova's.
    #[error("Glance sent an image the gateway cannot present: {0}")]
    Render(#[from] RenderError),
    #[error("The request took longer than the gateway's {0:?} limit.")]
    Timeout(std::time::Duration),
    /// The declared body is larger than `limits.body_limit_bytes`; it is never read.
    #[error("Request is too large: the limit is {0} bytes.")]
    BodyTooLarge(u64),
    /// `limits.max_heavy_in_flight` lists are being served: 503 with `Retry-After`.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// Refused by the gateway before it read the request (an over-long target, oversized
    /// headers), with the status Nova's own server gives.
    #[error("{1}")]
    Refused(StatusCode, String),
    /// The client stopped sending its body (`server.body_idle_timeout_secs`).
    #[error("The request body stopped arriving: nothing came for {0:?}.")]
    BodyStalled(std::time::Duration),
}

impl NovaError {
    /// Glance's failure of `call` (on image `image`; "" for a list) as Nova reports it.
    pub fn from_glance(call: GlanceCall, image: &str, e: UpstreamError) -> NovaError {
        let said = e.status().and_then(|status| call.table().iter().find(|(s, _)| *s == status.as_u16()));
        match said.map(|(_, says)| *says) {
            Some(Says::Unauthorized) => NovaError::Unauthorized,
            Some(Says::NotFound(text)) => NovaError::NotFound(text.into()),
            Some(Says::Forbidden(text)) => NovaError::Forbidden(text.into()),
            Some(Says::NotAuthorizedForImage) => NovaError::Forbidden(format!("Not authorized for image {image}.")),
            Some(Says::Quoting(StatusCode::BAD_REQUEST)) => NovaError::BadRequest(glanceclient_text(&e)),
            Some(Says::Quoting(StatusCode::FORBIDDEN)) => NovaError::Forbidden(glanceclient_text(&e)),
            Some(Says::Quoting(_)) => NovaError::Conflict(glanceclient_text(&e)),
            None => NovaError::Upstream(e),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            NovaError::BadRequest(_) | NovaError::Version(VersionError::Malformed(_)) => StatusCode::BAD_REQUEST,
            NovaError::Forbidden(_) => StatusCode::FORBIDDEN,
            NovaError::Unauthorized => StatusCode::UNAUTHORIZED,
            NovaError::Conflict(_) => StatusCode::CONFLICT,
            NovaError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            NovaError::NotFound(_) | NovaError::NoRoute(_) => StatusCode::NOT_FOUND,
            NovaError::Version(VersionError::Unsupported(..)) => StatusCode::NOT_ACCEPTABLE,
            NovaError::Upstream(e) => e.status_or(|status| match status {
                StatusCode::SERVICE_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                // A Glance 4xx the call's table does not translate: Nova answers these 500 too.
                status if status.is_client_error() => StatusCode::INTERNAL_SERVER_ERROR,
                // 5xx, or a 1xx/3xx that no Glance sends (glance.url pointing elsewhere).
                _ => StatusCode::BAD_GATEWAY,
            }),
            NovaError::Render(_) => StatusCode::BAD_GATEWAY,
            NovaError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            NovaError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            NovaError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            NovaError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            NovaError::Refused(status, _) => *status,
        }
    }

    /// When a client should try again, for the answers that say so.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            NovaError::Busy(busy) => Some(busy.retry_after),
            NovaError::Upstream(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// How Nova answers a body it cannot read or decode.
impl From<BodyError> for NovaError {
    fn from(e: BodyError) -> NovaError {
        match e {
            BodyError::TooLarge(limit) => NovaError::BodyTooLarge(limit),
            BodyError::NotJson => NovaError::UnsupportedMediaType,
            BodyError::Malformed => NovaError::BadRequest("Malformed request body".into()),
            BodyError::Unreadable(e) => NovaError::BadRequest(e),
            BodyError::Stalled(idle) => NovaError::BodyStalled(idle),
        }
    }
}

/// Glance's error as Nova quotes it: glanceclient's `HTTP <code> <reason>: <details>`, the
/// details HTML-escaped because glanceclient reads them out of Glance's HTML error page.
fn glanceclient_text(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Status { status, message } => {
            let escaped = message
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#x27;");
            format!("HTTP {} {}: {escaped}", status.as_u16(), status.canonical_reason().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// Nova's fault name for a status (`nova.api.openstack.wsgi.Fault._fault_names`).
fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

impl IntoResponse for NovaError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let NovaError::NoRoute(format) = self {
            return not_found_page(format);
        }
        let retry_after = self.retry_after();
        // Refusals at once (busy, circuit open) are counted in metrics: a burst would flood the log.
        if status.is_server_error() && retry_after.is_none() {
            tracing::warn!(error = %self, status = status.as_u16(), "nova call failed");
        }
        let message = match &self {
            NovaError::Upstream(e @ UpstreamError::ClientStalled(_)) => e.to_string(),
            NovaError::Upstream(e) if status.is_server_error() => format!("Unexpected API Error. {e}"),
            other => other.to_string(),
        };
        let body = serde_json::json!({ fault_name(status): { "code": status.as_u16(), "message": message } });
        let mut response = (status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
        if let Some(after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, crate::admission::retry_after_header(after));
        }
        response
    }
}

/// WebOb's 404 page, byte for byte as Nova's route misses carry it.
fn not_found_page(format: PageFormat) -> Response {
    let (content_type, body) = match format {
        PageFormat::Html => (
            "text/html; charset=UTF-8",
            "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  \
             The resource could not be found.<br /><br />\n\n\n\n </body>\n</html>",
        ),
        PageFormat::Json => (
            "application/json",
            r#"{"message": "The resource could not be found.<br /><br />\n\n\n", "code": "404 Not Found", "title": "Not Found"}"#,
        ),
        PageFormat::Text => ("text/plain; charset=UTF-8", "404 Not Found\n\nThe resource could not be found.\n\n   "),
    };
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(e: NovaError) -> (StatusCode, serde_json::Value) {
        let res = e.into_response();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[test]
    fn glance_errors_are_quoted_as_glanceclient_does() {
        let e = UpstreamError::Status {
            status: http::StatusCode::BAD_REQUEST,
            message: "Bad \"updated_at\" filter 'x' <y> & z".into(),
        };
        assert_eq!(
            glanceclient_text(&e),
            "HTTP 400 Bad Request: Bad &quot;updated_at&quot; filter &#x27;x&#x27; &lt;y&gt; &amp; z"
        );
    }

    /// The same Glance refusal is said per call, as Nova's own translations say it.
    #[test]
    fn glance_refusals_are_said_per_call() {
        let glance = |status: u16| UpstreamError::Status {
            status: StatusCode::from_u16(status).unwrap(),
            message: "no <way>".into(),
        };
        let said = |call, status| {
            let e = NovaError::from_glance(call, "i1", glance(status));
            (e.status().as_u16(), e.to_string())
        };
        assert_eq!(said(GlanceCall::Get, 403), (403, "Not authorized for image i1.".into()));
        assert_eq!(said(GlanceCall::Delete, 403), (403, "You are not allowed to delete the image.".into()));
        assert_eq!(said(GlanceCall::List, 403), (403, "HTTP 403 Forbidden: no &lt;way&gt;".into()));
        assert_eq!(said(GlanceCall::Patch, 413), (403, "Image metadata limit exceeded".into()));
        assert_eq!(said(GlanceCall::Delete, 409), (409, "HTTP 409 Conflict: no &lt;way&gt;".into()));
        assert_eq!(said(GlanceCall::Get, 404).0, 404);
        // Not in the call's table: Nova's 500 for a 4xx, 502 for a 5xx, 503 kept.
        assert_eq!(said(GlanceCall::List, 404).0, 500);
        assert_eq!(said(GlanceCall::Delete, 400).0, 500);
        assert_eq!(said(GlanceCall::Get, 500).0, 502);
        assert_eq!(said(GlanceCall::Get, 503).0, 503);
        for call in [GlanceCall::List, GlanceCall::Get, GlanceCall::Patch, GlanceCall::Delete] {
            assert!(matches!(NovaError::from_glance(call, "i1", glance(401)), NovaError::Unauthorized));
        }
    }

    #[tokio::test]
    async fn faults_are_named_by_status() {
        let (s, body) = render(NovaError::NotFound("Image not found.".into())).await;
        assert_eq!(s, 404);
        assert_eq!(body, serde_json::json!({"itemNotFound": {"code": 404, "message": "Image not found."}}));
        let (s, body) = render(NovaError::Version(VersionError::Unsupported(
            crate::mapping::ApiVersion::new(3, 0),
            crate::mapping::ApiVersion::new(2, 9),
        )))
        .await;
        assert_eq!((s.as_u16(), body["computeFault"]["code"].as_u64()), (406, Some(406)));
        let (s, body) = render(NovaError::Upstream(UpstreamError::Unreachable("refused".into()))).await;
        assert_eq!((s.as_u16(), body["serviceUnavailable"]["code"].as_u64()), (503, Some(503)));
        let (s, _) = render(NovaError::Upstream(UpstreamError::Timeout(std::time::Duration::from_secs(1)))).await;
        assert_eq!(s, 504);
        // Nova names no fault for a 408: its catch-all.
        let (s, body) = render(NovaError::BodyStalled(std::time::Duration::from_secs(30))).await;
        assert_eq!((s.as_u16(), body["computeFault"]["code"].as_u64()), (408, Some(408)));
    }

    #[tokio::test]
    async fn route_misses_are_webob_pages() {
        let page = |accept: &'static str| {
            let mut h = http::HeaderMap::new();
            if !accept.is_empty() {
                h.insert(header::ACCEPT, HeaderValue::from_static(accept));
            }
            NovaError::NoRoute(PageFormat::negotiate(&h)).into_response()
        };
        for (accept, kind, len) in
            [("", "text/html", 154), ("*/*", "text/html", 154), ("application/json", "application/json", 112)]
        {
            let res = page(accept);
            assert_eq!(res.status(), 404);
            assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{accept}");
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes().len(), len, "{accept}");
        }
    }
}
