//! W3C Trace Context (`traceparent`, `tracestate`) across the gateway.
//!
//! The edge gives every request a span of its own in a trace: the client's trace when it sent
//! a valid `traceparent` (and `[tracing] accept_client_context` allows it), else a new one. It
//! writes that span's `traceparent` back into the request, so the request's headers carry the
//! context to whatever serves it, whatever the dialect; each upstream call then opens a child
//! span ([`upstream_span`]) and sends that child's id as the parent Glance, Keystone or the
//! passthrough's upstream sees.
//!
//! A client's trace id is only a correlation id, never identity: it joins the client's trace,
//! and nothing else depends on it. The ids are made here rather than by a tracing subscriber,
//! so that they reach the upstreams whatever the log filter, and in the library's own tests.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The sampled flag, the only one of version 00's flags that is defined (W3C Trace Context §3.2.2.5).
const SAMPLED: u8 = 0x01;

/// One span's place in a trace, as `traceparent` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// A trace id, printed as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId([u8; 16]);

/// A span id, printed as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId([u8; 8]);

impl TraceParent {
    /// A `traceparent` value, if valid: version 00 exactly, or a later version's first four
    /// fields (§3.2.4: a version this parser does not know may append fields); neither id all
    /// zeros; lowercase hex only.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let s = value.as_bytes();
        if s.len() < 55 {
            return None;
        }
        let version = hex::<1>(&s[0..2])?[0];
        match version {
            0xff => return None,
            0x00 if s.len() != 55 => return None,
            _ if s.len() > 55 && s[55] != b'-' => return None,
            _ => {}
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&s[3..35]).filter(|id| *id != [0; 16])?;
        let span_id = hex::<8>(&s[36..52]).filter(|id| *id != [0; 8])?;
        let flags = hex::<1>(&s[53..55])?[0];
        Some(TraceParent { trace_id, span_id, flags: flags & SAMPLED })
    }

    /// The root span of a new trace.
    pub fn fresh(sampled: bool) -> Self {
        TraceParent { trace_id: random(), span_id: random(), flags: if sampled { SAMPLED } else { 0 } }
    }

    /// A new span in the same trace, below this one.
    pub fn child(&self) -> Self {
        TraceParent { span_id: random(), ..*self }
    }

    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    pub fn span_id(&self) -> SpanId {
        SpanId(self.span_id)
    }

    /// Whether the trace's spans are recorded (and exported, when export is on).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// This span as a `traceparent` value, version 00.
    pub fn header(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        encode(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        encode(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        encode(&[self.flags], &mut out[53..55]);
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
    }

    /// The span a request's headers name as the current one (the edge put it there).
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        headers.get(TRACEPARENT).and_then(Self::parse)
    }
}

/// The request's own span, written into its headers, and its parent: a child of the client's
/// span when the client sent exactly one valid `traceparent` and `accept_client` allows it
/// (its `tracestate` then stays, as W3C asks of a participant that changes nothing in it);
/// else the root of a new trace, `sampled` as said, and a `tracestate` sent goes with the
/// `traceparent` it belonged to.
pub fn ensure(headers: &mut HeaderMap, accept_client: bool, sampled: bool) -> (TraceParent, Option<SpanId>) {
    let mut sent = headers.get_all(TRACEPARENT).iter();
    let client = match (sent.next(), sent.next()) {
        (Some(value), None) if accept_client => TraceParent::parse(value),
        _ => None,
    };
    let own = match client {
        Some(client) => client.child(),
        None => {
            headers.remove(TRACESTATE);
            TraceParent::fresh(sampled)
        }
    };
    headers.insert(TRACEPARENT, own.header());
    (own, client.map(|c| c.span_id()))
}

/// Copies what correlates a request across services (its request id and trace context) from
/// a client's request to the headers of an upstream call.
pub fn correlate(incoming: &HeaderMap, out: &mut HeaderMap) {
    for name in [super::request_id::HEADER, TRACEPARENT] {
        if let Some(value) = incoming.get(&name) {
            out.insert(name, value.clone());
        }
    }
    for value in incoming.get_all(TRACESTATE) {
        out.append(TRACESTATE, value.clone());
    }
}

/// The span of one upstream call, a child of the request's span that `headers` name: the
/// `traceparent` in `headers` becomes the child's, so the upstream sees the call as its parent.
/// Without a request span (a call made outside any request), the call starts a trace of its own.
/// `path` is the URL's path alone: a query may hold what a log must not.
pub fn upstream_span(upstream: &str, method: &Method, path: &str, headers: &mut HeaderMap) -> tracing::Span {
    let parent = TraceParent::of(headers);
    let span = parent.map_or_else(|| TraceParent::fresh(false), |parent| parent.child());
    headers.insert(TRACEPARENT, span.header());
    tracing::info_span!(
        "upstream",
        otel.name = %format_args!("{upstream} {method} {path}"),
        otel.kind = "client",
        upstream,
        method = %method,
        path,
        trace_id = %span.trace_id(),
        span_id = %span.span_id(),
        parent_id = parent.map(|p| tracing::field::display(p.span_id())),
        sampled = span.sampled(),
        status = tracing::field::Empty,
    )
}

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; N];
    // The system's generator does not fail once the process runs; all zeros would be invalid.
    while ring::rand::SystemRandom::new().fill(&mut bytes).is_err() || bytes == [0; N] {}
    bytes
}

/// Lowercase hex digits, decoded; uppercase is invalid in `traceparent` (§3.2.2).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn write_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Option<TraceParent> {
        TraceParent::parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn valid_traceparents_parse_and_print_back() {
        let p = parse(CLIENT).unwrap();
        assert_eq!(p.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(p.header(), CLIENT);
        // A later version may append fields; its first four are read as version 00's.
        let later = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever").unwrap();
        assert_eq!(later.header(), CLIENT);
        // Flags other than sampled are not passed on.
        assert_eq!(parse(&CLIENT.replace("-01", "-ff")).unwrap().header(), CLIENT);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_edge_joins_a_valid_client_trace_and_starts_its_own_otherwise() {
        let client = parse(CLIENT).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(CLIENT));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let (own, parent) = ensure(&mut headers, true, false);
        assert_eq!(own.trace_id(), client.trace_id());
        assert_ne!(own.span_id(), client.span_id());
        assert_eq!(parent, Some(client.span_id()));
        assert!(own.sampled(), "the client's flag stands");
        assert_eq!(TraceParent::of(&headers), Some(own));
        assert_eq!(headers[TRACESTATE], "vendor=x");

        for (sent, accept) in [(&[CLIENT][..], false), (&[CLIENT, CLIENT][..], true), (&["00-bogus"][..], true)] {
            let mut headers = HeaderMap::new();
            for value in sent {
                headers.append(TRACEPARENT, HeaderValue::from_str(value).unwrap());
            }
            headers.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
            let (own, parent) = ensure(&mut headers, accept, true);
            assert_ne!(own.trace_id(), client.trace_id(), "{sent:?}");
            assert_eq!(parent, None, "{sent:?}");
            assert_eq!(headers.get_all(TRACEPARENT).iter().collect::<Vec<_>>(), [&own.header()], "{sent:?}");
            assert!(own.header().to_str().unwrap().ends_with("-01"));
            assert_eq!(headers.get(TRACESTATE), None, "{sent:?}");
        }
    }

    #[test]
    fn an_upstream_call_is_a_child_of_the_request_span() {
        let mut headers = HeaderMap::new();
        let (own, _) = ensure(&mut headers, true, false);
        assert!(!own.sampled());
        let _span = upstream_span("glance", &Method::GET, "/v2/images", &mut headers);
        let call = TraceParent::of(&headers).unwrap();
        assert_eq!(call.trace_id(), own.trace_id());
        assert_ne!(call.span_id(), own.span_id());
    }
}
