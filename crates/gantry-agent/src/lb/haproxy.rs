//! haproxy: render, check (`haproxy -c`), swap atomically, reload in master-worker mode.
