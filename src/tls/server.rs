//! TLS on the listener.
