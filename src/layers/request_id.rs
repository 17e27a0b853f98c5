//! Request ids in OpenStack's form (`req-<uuid>`), in `X-Openstack-Request-Id`.
//!
//! A client's own id is kept when it has that form, so one id follows a call through the
//! gateway into Glance's logs; anything else is replaced, so a client cannot inject arbitrary
//! text into every log line downstream.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// A fresh `req-<uuid4>`.
pub fn make() -> HeaderValue {
    let mut id = *b"req-00000000-0000-0000-0000-000000000000";
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id[4..]);
    // Shared from the start: the id is cloned into the response and the log, and cloning a
    // `Bytes` made from a `Vec` would allocate again.
    HeaderValue::from_maybe_shared(Bytes::from_owner(id)).expect("a uuid is a valid header value")
}

/// Whether a client-supplied id has OpenStack's form.
pub fn is_valid(value: &HeaderValue) -> bool {
    value.to_str().ok().and_then(|s| s.strip_prefix("req-")).is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok())
}

/// The request's id: the client's own if it sent exactly one, well-formed, else a fresh one
/// that replaces whatever it sent.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    // A look at each of a request's few headers costs less than hashing this long name.
    let mut sent = headers.iter().filter(|(name, _)| *name == HEADER).map(|(_, id)| id);
    if let (Some(id), None) = (sent.next(), sent.next()) {
        if is_valid(id) {
            return id.clone();
        }
    }
    let id = make();
    headers.insert(HEADER, id.clone());
    id
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
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, ok.clone());
        assert_eq!(ensure(&mut headers), ok);
        assert_eq!(headers.get_all(HEADER).iter().collect::<Vec<_>>(), [&ok]);
        for sent in [&["evil\tvalue"][..], &[ok.to_str().unwrap(), ok.to_str().unwrap()][..]] {
            let mut headers = HeaderMap::new();
            for value in sent {
                headers.append(HEADER, HeaderValue::from_str(value).unwrap());
            }
            let made = ensure(&mut headers);
            assert!(is_valid(&made) && made != ok, "{sent:?}");
            assert_eq!(headers.get_all(HEADER).iter().collect::<Vec<_>>(), [&made], "{sent:?}");
        }
    }

    #[test]
    fn made_ids_are_valid_and_new() {
        let (a, b) = (make(), make());
        assert!(is_valid(&a) && is_valid(&b) && a != b);
        assert_eq!(a.len(), 40);
    }
}
