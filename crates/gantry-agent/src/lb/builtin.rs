//! The built-in TCP proxy: round robin over healthy backends, where haproxy is not installed.
