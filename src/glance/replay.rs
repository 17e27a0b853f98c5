//! A Glance that records each call and replays given answers, in order: what `explain` and
//! `image-gateway test` put behind the real dialect handlers (through the embedded transport,
//! [`super::GlanceClient::embedded`]) so that they run with no network.
//!
//! The image schema (`GET /v2/schemas/image`, read once for the base property names) is
//! answered by the in-memory store's copy of Glance's: it is the same in every Glance, and a
//! case that had to spell it out would only be longer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

use super::embedded;

/// Largest request body recorded: what the gateway sends Glance is small JSON.
const MAX_RECORDED_BODY: usize = 1 << 20;

/// One answer Glance gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    /// Sent as JSON; `Null` sends no body.
    pub body: Value,
}

impl Answer {
    /// An answer as a file gives it: `{"status": 404, "body": {...}}` (both keys, nothing else),
    /// or a bare JSON body answered with 200.
    pub fn from_json(value: Value) -> Result<Answer, String> {
        if let Some(object) = value.as_object().filter(|o| o.len() == 2 && o.contains_key("body")) {
            if let Some(status) = object.get("status").and_then(Value::as_u64) {
                let status = u16::try_from(status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| format!("`status` {status} is not an HTTP status"))?;
                return Ok(Answer { status, body: object["body"].clone() });
            }
        }
        Ok(Answer { status: StatusCode::OK, body: value })
    }
}

/// Who answered a recorded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum AnsweredBy {
    /// The given answer of this index (0-based).
    Given { index: usize, status: u16 },
    /// The in-memory store's image schema.
    BuiltInSchema,
    /// Nobody: no answer was left (the replay answered 503).
    Missing,
}

/// One call the gateway made to Glance.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    /// Decoded, in the order sent.
    pub query: Vec<(String, String)>,
    /// The request body: JSON when it is, else text; `None` when empty.
    pub body: Option<Value>,
    pub answered_by: AnsweredBy,
}

impl RecordedCall {
    /// The path and query as sent (form-encoded).
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.query).finish();
        format!("{}?{query}", self.path)
    }
}

#[derive(Debug, Default)]
struct State {
    answers: VecDeque<Answer>,
    given: usize,
    calls: Vec<RecordedCall>,
}

/// The record/replay Glance. Cheap to clone: clones share the record.
#[derive(Clone, Debug)]
pub struct Replay {
    state: Arc<Mutex<State>>,
    schema: axum::Router,
}

impl Replay {
    pub fn new(answers: Vec<Answer>) -> Replay {
        let state = State { answers: answers.into(), ..State::default() };
        Replay { state: Arc::new(Mutex::new(state)), schema: embedded::router(embedded::Store::new()) }
    }

    /// The Glance v2 router to hand the client.
    pub fn router(&self) -> axum::Router {
        let replay = self.clone();
        axum::Router::new().fallback(move |request: Request| {
            let replay = replay.clone();
            async move { replay.answer(request).await }
        })
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// Given answers no call used.
    pub fn unused(&self) -> usize {
        self.lock().answers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it: a poisoned lock still guards a consistent record.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn answer(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        let bytes = axum::body::to_bytes(body, MAX_RECORDED_BODY).await.unwrap_or_default();
        let body = (!bytes.is_empty()).then(|| {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        });
        let mut call = RecordedCall {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            body,
            answered_by: AnsweredBy::Missing,
        };
        if parts.method == Method::GET && call.path == "/v2/schemas/image" {
            call.answered_by = AnsweredBy::BuiltInSchema;
            self.lock().calls.push(call);
            let request = Request::from_parts(parts, axum::body::Body::empty());
            return self.schema.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
        }
        let mut state = self.lock();
        let next = state.answers.pop_front();
        let response = match next {
            Some(answer) => {
                call.answered_by = AnsweredBy::Given { index: state.given, status: answer.status.as_u16() };
                state.given += 1;
                match answer.body {
                    Value::Null => answer.status.into_response(),
                    body => (answer.status, axum::Json(body)).into_response(),
                }
            }
            None => super::error_response(StatusCode::SERVICE_UNAVAILABLE, "no answer was given for this call"),
        };
        state.calls.push(call);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answer_files_are_wrapped_or_bare() {
        let wrapped = Answer::from_json(json!({"status": 404, "body": {"message": "gone"}})).unwrap();
        assert_eq!(wrapped, Answer { status: StatusCode::NOT_FOUND, body: json!({"message": "gone"}) });
        // An image has a `status` too: it is a body.
        let image = json!({"id": "x", "status": "active"});
        assert_eq!(Answer::from_json(image.clone()).unwrap(), Answer { status: StatusCode::OK, body: image });
        assert!(Answer::from_json(json!({"status": 1000, "body": null})).is_err());
    }
}
