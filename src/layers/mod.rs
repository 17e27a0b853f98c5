//! The gateway's own tower middleware: the [`edge`] layer around every route, and the request
//! ids, trace context and metrics it keeps.

pub mod edge;
pub mod metrics;
pub mod request_id;
pub mod trace;
