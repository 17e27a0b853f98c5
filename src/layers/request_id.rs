//! Request ids in OpenStack's form (`req-<uuid>`), in `X-Openstack-Request-Id`.
//!
//! A client's own id is kept when it has that form, so one id follows a call through the
//! gateway into Glance's logs; anything else is replaced, so a client cannot inject arbitrary
//! text into every log line downstream.

use http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

pub const HEADER: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// Makes `req-<uuid4>` ids.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeOpenStackId;

impl MakeRequestId for MakeOpenStackId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&format!("req-{}", uuid::Uuid::new_v4())).ok().map(RequestId::new)
    }
}

/// Whether a client-supplied id has OpenStack's form.
pub fn is_valid(value: &HeaderValue) -> bool {
    value.to_str().ok().and_then(|s| s.strip_prefix("req-")).is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok())
}

/// Drops a malformed incoming id so that the next layer makes a fresh one.
pub fn drop_malformed<B>(mut req: Request<B>) -> Request<B> {
    if req.headers().get_all(&HEADER).iter().count() > 1 || req.headers().get(&HEADER).is_some_and(|v| !is_valid(v)) {
        req.headers_mut().remove(&HEADER);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openstack_ids_are_kept() {
        let ok = HeaderValue::from_static("req-6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f");
        assert!(is_valid(&ok));
        for bad in ["6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f", "req-", "req-x; drop table", "req-6f1c1bd8"] {
            assert!(!is_valid(&HeaderValue::from_static(bad)), "{bad}");
        }
        let req = Request::get("/").header(HEADER, "evil\tvalue").body(()).unwrap();
        assert!(drop_malformed(req).headers().get(HEADER).is_none());
        let req = Request::get("/").header(HEADER, ok.clone()).body(()).unwrap();
        assert_eq!(drop_malformed(req).headers().get(HEADER), Some(&ok));
    }

    #[test]
    fn made_ids_are_valid() {
        let id = MakeOpenStackId.make_request_id(&Request::get("/").body(()).unwrap()).unwrap();
        assert!(is_valid(id.header_value()));
    }
}
