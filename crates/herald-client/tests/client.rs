//! The SDK against real Herald servers started in-process (port 0, a temp data dir each). One test binary,
//! modules below, to keep link time down.

mod client {
    pub mod helpers;

    mod backoff;
    mod media;
    mod outbox;
    mod resume;
    mod safety;
    mod search;
    mod threads;
}
