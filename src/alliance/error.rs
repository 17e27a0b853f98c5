//! The Alliance dialect's errors, and the one place they become responses.
//!
//! Every error is `{"error": {"code": <int>, "title": <reason phrase>, "message": <text>}}`
//! (docs/alliance.md). Glance's own refusals keep their status and explanation, but for the
//! calls [`GlanceCall`] names, whose refusals are said here too. Every status the dialect
//! answers is decided in this file ([`AllianceError::status`]).

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::admission::Busy;
use crate::body::BodyError;
use crate::glance::UpstreamError;
use crate::keystone::KeystoneError;
use crate::mapping::{RenderError, RequestError};

/// The Glance calls whose refusals Alliance says in words of its own.
#[derive(Clone, Copy, Debug)]
pub enum GlanceCall<'a> {
    /// Reading image `id` named by the client: another environment's image is "not found",
    /// never "forbidden", so ids do not leak.
    GetById(&'a str),
    /// Importing `copy_from` into a new image: Glance's refusal is the client's URL's fault.
    Import(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum AllianceError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Body(#[from] RequestError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no such call: {0}")]
    NoRoute(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error(transparent)]
    BodyUnusable(#[from] BodyError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Keystone(#[from] KeystoneError),
    #[error("Glance sent an image the gateway cannot present: {0}")]
    Render(#[from] RenderError),
    #[error("the request took longer than the gateway's {0:?} limit")]
    Timeout(std::time::Duration),
    /// `limits.max_heavy_in_flight` lists are being served: 503 with `Retry-After`.
    #[error(transparent)]
    Busy(#[from] Busy),
}

impl AllianceError {
    /// Glance's failure of `call` as Alliance reports it.
    pub fn from_glance(call: GlanceCall<'_>, e: UpstreamError) -> AllianceError {
        match (call, e) {
            (GlanceCall::GetById(id), UpstreamError::Status { status, .. }) if matches!(status.as_u16(), 403 | 404) => {
                AllianceError::NotFound(format!("No image with id {id}"))
            }
            (GlanceCall::Import(uri), UpstreamError::Status { status, message }) if status.is_client_error() => {
                AllianceError::BadRequest(format!("copy_from {uri} cannot be imported: {message}"))
            }
            (_, e) => AllianceError::Upstream(e),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AllianceError::BadRequest(_) | AllianceError::Body(_) => StatusCode::BAD_REQUEST,
            AllianceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AllianceError::Forbidden(_) => StatusCode::FORBIDDEN,
            AllianceError::NotFound(_) | AllianceError::NoRoute(_) => StatusCode::NOT_FOUND,
            AllianceError::Conflict(_) => StatusCode::CONFLICT,
            AllianceError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AllianceError::BodyUnusable(e) => match e {
                BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                BodyError::Malformed | BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
                BodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            },
            // Glance's refusals of the client's request keep their meaning.
            AllianceError::Upstream(e) => e.status_or(|status| match status.as_u16() {
                400 | 401 | 403 | 404 | 409 | 413 | 415 | 503 => status,
                _ => StatusCode::BAD_GATEWAY,
            }),
            AllianceError::Keystone(KeystoneError::Unreachable(_) | KeystoneError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AllianceError::Keystone(_) => StatusCode::BAD_GATEWAY,
            AllianceError::Render(_) => StatusCode::BAD_GATEWAY,
            AllianceError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AllianceError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// When a client should try again, for the answers that say so.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AllianceError::Busy(busy) => Some(busy.retry_after),
            AllianceError::Upstream(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl IntoResponse for AllianceError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after();
        // Refusals at once (busy, circuit open) are counted in metrics: a burst would flood the log.
        if status.is_server_error() && retry_after.is_none() {
            tracing::warn!(error = %self, status = status.as_u16(), "alliance call failed");
        }
        let message = match &self {
            AllianceError::Upstream(UpstreamError::Status { message, .. }) => message.clone(),
            other => other.to_string(),
        };
        let body = serde_json::json!({"error": {
            "code": status.as_u16(),
            "title": status.canonical_reason().unwrap_or(""),
            "message": message,
        }});
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(after) = retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, crate::admission::retry_after_header(after));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_have_one_shape() {
        let cases = [
            (AllianceError::NotFound("No image abc".into()), 404, "Not Found", "No image abc"),
            (
                AllianceError::BodyUnusable(BodyError::NotJson),
                415,
                "Unsupported Media Type",
                "the Content-Type is not JSON",
            ),
            (
                AllianceError::Upstream(UpstreamError::Status {
                    status: StatusCode::CONFLICT,
                    message: "in use".into(),
                }),
                409,
                "Conflict",
                "in use",
            ),
            (
                AllianceError::Upstream(UpstreamError::Status {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "boom".into(),
                }),
                502,
                "Bad Gateway",
                "boom",
            ),
            (AllianceError::Upstream(UpstreamError::Unreachable("refused".into())), 503, "Service Unavailable", ""),
            (
                AllianceError::from_glance(
                    GlanceCall::GetById("i1"),
                    UpstreamError::Status { status: StatusCode::FORBIDDEN, message: "not yours".into() },
                ),
                404,
                "Not Found",
                "No image with id i1",
            ),
            (
                AllianceError::from_glance(
                    GlanceCall::Import("http://x/y"),
                    UpstreamError::Status { status: StatusCode::CONFLICT, message: "bad uri".into() },
                ),
                400,
                "Bad Request",
                "copy_from http://x/y cannot be imported: bad uri",
            ),
            (
                AllianceError::from_glance(
                    GlanceCall::Import("http://x/y"),
                    UpstreamError::Status { status: StatusCode::BAD_GATEWAY, message: "down".into() },
                ),
                502,
                "Bad Gateway",
                "down",
            ),
            (
                AllianceError::BodyUnusable(BodyError::Stalled(std::time::Duration::from_secs(30))),
                408,
                "Request Timeout",
                "nothing of its request body for 30s",
            ),
        ];
        for (error, code, title, message) in cases {
            let res = error.into_response();
            assert_eq!(res.status().as_u16(), code);
            let body: serde_json::Value =
                serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["title"], title);
            assert!(body["error"]["message"].as_str().unwrap().contains(message), "{body}");
        }
    }
}
