//! TLS to the upstreams (Glance, Keystone, the passthrough upstreams).
