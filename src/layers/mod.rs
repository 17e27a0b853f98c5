//! The gateway's own tower middleware. Stock layers (tracing, panic catching) come from
//! tower-http and are assembled in [`crate::server`].

pub mod metrics;
pub mod request_id;
