//! Integration tests of the server: placeholder replaced below.
