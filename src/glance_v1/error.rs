//! The Glance v1 dialect's errors, and the one place they become responses.
//!
//! Glance v1 answered errors with WebOb's pages: HTML for a client that accepts it (curl,
//! python-requests and so glanceclient send `Accept: */*`), JSON for `application/json`, plain
//! text otherwise. glanceclient reads the status and the page's text with the markup removed.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::admission::Busy;
use crate::glance::UpstreamError;
use crate::mapping::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A method the path does not take; `Allow` lists the ones it does.
    #[error("The method is not allowed for this resource.")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("Glance sent an image the gateway cannot present: {0}")]
    Render(#[from] RenderError),
    #[error("The request took longer than the gateway's {0:?} limit.")]
    Timeout(std::time::Duration),
    /// `limits.max_heavy_in_flight` lists are being served: 503 with `Retry-After`.
    #[error(transparent)]
    Busy(#[from] Busy),
}

impl V1Error {
    pub fn status(&self) -> StatusCode {
        match self {
            V1Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            V1Error::Forbidden(_) => StatusCode::FORBIDDEN,
            V1Error::NotFound(_) => StatusCode::NOT_FOUND,
            V1Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            V1Error::Conflict(_) => StatusCode::CONFLICT,
            V1Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // Glance's refusals of the client's request keep their status and reason.
            V1Error::Upstream(e) => e.status_or(|status| match status.as_u16() {
                400 | 401 | 403 | 404 | 409 | 410 | 413 | 415 | 416 | 503 => status,
                _ => StatusCode::BAD_GATEWAY,
            }),
            V1Error::Render(_) => StatusCode::BAD_GATEWAY,
            V1Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            V1Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            V1Error::Busy(busy) => Some(busy.retry_after),
            V1Error::Upstream(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The error as WebOb would have paged it for a request with these headers.
    pub fn page(self, request: &HeaderMap) -> Response {
        let status = self.status();
        let retry_after = self.retry_after();
        if status.is_server_error() && retry_after.is_none() {
            tracing::warn!(error = %self, status = status.as_u16(), "glance v1 call failed");
        }
        let allow = match &self {
            V1Error::MethodNotAllowed(allow) => Some(allow.clone()),
            _ => None,
        };
        let explanation = match &self {
            V1Error::Upstream(UpstreamError::Status { message, .. }) => message.clone(),
            other => other.to_string(),
        };
        let mut response = webob_page(status, &explanation, PageFormat::negotiate(request));
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Some(after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, crate::admission::retry_after_header(after));
        }
        response
    }
}

/// Which of WebOb's page formats a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageFormat {
    Html,
    Json,
    Text,
}

impl PageFormat {
    /// WebOb's choice: HTML for `text/html` or `*/*`, JSON for `application/json`, else text.
    fn negotiate(headers: &HeaderMap) -> PageFormat {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let offers = |kind: &str| accept.split(',').any(|part| part.trim().starts_with(kind));
        if offers("text/html") || offers("*/*") {
            PageFormat::Html
        } else if offers("application/json") {
            PageFormat::Json
        } else {
            PageFormat::Text
        }
    }
}

/// A WebOb error page: `explanation` under the status line.
fn webob_page(status: StatusCode, explanation: &str, format: PageFormat) -> Response {
    let line = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let (content_type, body) = match format {
        PageFormat::Html => (
            "text/html; charset=UTF-8",
            format!(
                "<html>\n <head>\n  <title>{line}</title>\n </head>\n <body>\n  <h1>{line}</h1>\n  \
                 {}<br /><br />\n\n\n\n </body>\n</html>",
                html_escape(explanation)
            ),
        ),
        PageFormat::Json => (
            "application/json",
            serde_json::json!({
                "message": format!("{explanation}<br /><br />\n\n\n"),
                "code": line,
                "title": status.canonical_reason().unwrap_or(""),
            })
            .to_string(),
        ),
        PageFormat::Text => ("text/plain; charset=UTF-8", format!("{line}\n\n{explanation}\n\n   ")),
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#x27;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn page(e: V1Error, accept: &'static str) -> (StatusCode, String, String) {
        let mut headers = HeaderMap::new();
        if !accept.is_empty() {
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        }
        let res = e.page(&headers);
        let kind = res.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let status = res.status();
        (status, kind, String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn pages_follow_webob_negotiation() {
        let (s, kind, body) = page(V1Error::NotFound("Image x not found.".into()), "*/*").await;
        assert_eq!((s.as_u16(), kind.as_str()), (404, "text/html; charset=UTF-8"));
        assert!(body.contains("<h1>404 Not Found</h1>\n  Image x not found.<br /><br />"), "{body}");
        let (_, kind, body) = page(V1Error::BadRequest("Bad header: x-image-meta-foo".into()), "").await;
        assert_eq!(kind, "text/plain; charset=UTF-8");
        assert_eq!(body, "400 Bad Request\n\nBad header: x-image-meta-foo\n\n   ");
        let (_, _, body) = page(V1Error::Conflict("<in use>".into()), "application/json").await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], "409 Conflict");
        assert_eq!(json["message"], "<in use><br /><br />\n\n\n");
        let (_, _, body) = page(V1Error::Conflict("<in use>".into()), "text/html").await;
        assert!(body.contains("&lt;in use&gt;"), "{body}");
    }

    #[tokio::test]
    async fn glance_failures_keep_refusals_and_hide_the_rest() {
        let glance = |code: u16| {
            V1Error::Upstream(UpstreamError::Status {
                status: StatusCode::from_u16(code).unwrap(),
                message: "m".into(),
            })
        };
        for (code, want) in [(403, 403), (404, 404), (409, 409), (413, 413), (500, 502), (302, 502)] {
            assert_eq!(glance(code).status().as_u16(), want, "{code}");
        }
        let res = V1Error::MethodNotAllowed("GET, POST".into()).page(&HeaderMap::new());
        assert_eq!(res.headers()[header::ALLOW], "GET, POST");
        assert_eq!(V1Error::Upstream(UpstreamError::ClientBody("short".into())).status(), 400);
    }
}
