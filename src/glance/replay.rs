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
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

use super::embedded;

/// Largest request body recorded: what the gateway sends Glance is small JSON, or a case's
/// small upload; a larger body is recorded as none.
const MAX_RECORDED_BODY: usize = 1 << 20;

/// The keys of an answer given with its status: the rest of a file's object is a bare body.
const ANSWER_KEYS: &[&str] = &["status", "headers", "body", "body_text"];

/// One answer Glance gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    /// Sent as given, after (so over) the body's own `Content-Type`.
    pub headers: Vec<(String, String)>,
    pub body: Payload,
}

/// A body as a case or a file gives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Sent as JSON; `Null` sends no body.
    Json(Value),
    /// Sent as these bytes (image data, say), `text/plain` unless the headers say otherwise.
    Text(String),
}

impl Answer {
    /// A JSON answer with no headers of its own.
    pub fn json(status: StatusCode, body: Value) -> Answer {
        Answer { status, headers: Vec::new(), body: Payload::Json(body) }
    }

    /// An answer as a file gives it: `{"status": 404, "body": {...}}`, or with `body_text`
    /// (a body that is not JSON) for `body`, and optionally `"headers": {"name": "value"}`;
    /// or a bare JSON body answered with 200 (an object with a numeric `status`, a body, and
    /// none but these keys is the former).
    pub fn from_json(value: Value) -> Result<Answer, String> {
        let wrapped = value.as_object().filter(|o| {
            o.get("status").is_some_and(Value::is_u64)
                && (o.contains_key("body") || o.contains_key("body_text"))
                && o.keys().all(|k| ANSWER_KEYS.contains(&k.as_str()))
        });
        let Some(object) = wrapped else { return Ok(Answer::json(StatusCode::OK, value)) };
        let status = object["status"].as_u64().unwrap_or_default();
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("`status` {status} is not an HTTP status"))?;
        let body = match (object.get("body"), object.get("body_text")) {
            (Some(_), Some(_)) => return Err("give `body` or `body_text`, not both".into()),
            (_, Some(Value::String(text))) => Payload::Text(text.clone()),
            (_, Some(_)) => return Err("`body_text` must be a string".into()),
            (body, None) => Payload::Json(body.cloned().unwrap_or_default()),
        };
        let headers = match object.get("headers") {
            None => Vec::new(),
            Some(Value::Object(h)) => h
                .iter()
                .map(|(name, v)| match v {
                    Value::String(v) => Ok((name.clone(), v.clone())),
                    _ => Err(format!("header `{name}` must be a string")),
                })
                .collect::<Result<_, String>>()?,
            Some(_) => return Err("`headers` must be an object of strings".into()),
        };
        Ok(Answer { status, headers, body })
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Payload::Json(Value::Null) => self.status.into_response(),
            Payload::Json(body) => (self.status, axum::Json(body)).into_response(),
            Payload::Text(text) => (self.status, text).into_response(),
        };
        for (name, value) in self.headers {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                (Ok(name), Ok(value)) => {
                    response.headers_mut().insert(name, value);
                }
                _ => return super::error_response(StatusCode::BAD_GATEWAY, "a given header is not valid HTTP"),
            }
        }
        response
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
                answer.into_response()
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
        assert_eq!(wrapped, Answer::json(StatusCode::NOT_FOUND, json!({"message": "gone"})));
        // An image has a `status` too: it is a body.
        let image = json!({"id": "x", "status": "active"});
        assert_eq!(Answer::from_json(image.clone()).unwrap(), Answer::json(StatusCode::OK, image));
        assert!(Answer::from_json(json!({"status": 1000, "body": null})).is_err());
    }

    /// Image data is not JSON: a file gives it as text, with the headers Glance sends with it.
    #[tokio::test]
    async fn raw_answers_keep_their_bytes_and_headers() {
        let given = json!({"status": 200, "headers": {"content-type": "application/octet-stream"}, "body_text": "{x"});
        let answer = Answer::from_json(given).unwrap();
        let expected = Answer {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: Payload::Text("{x".into()),
        };
        assert_eq!(answer, expected);
        let response = answer.into_response();
        assert_eq!(response.headers()["content-type"], "application/octet-stream");
        let bytes = axum::body::to_bytes(response.into_body(), 100).await.unwrap();
        assert_eq!(&bytes[..], b"{x");
        // Another key makes it a bare body (which this is not: it has no body key).
        let bare = json!({"status": 200, "headers": {}});
        assert_eq!(Answer::from_json(bare.clone()).unwrap(), Answer::json(StatusCode::OK, bare));
        assert!(Answer::from_json(json!({"status": 200, "body_text": 5})).is_err());
    }
}
