//! Herald's integration tests: real servers on 127.0.0.1:0 with embedded storage in temp dirs (or, with
//! `HERALD_TEST_BACKEND=postgres`, each in a fresh PostgreSQL database; with `HERALD_TEST_BACKEND=kafka`, each
//! also a one-node cluster on the Kafka log, see scripts/integration-on-kafka), driven over
//! real HTTP. One test binary (modules below) keeps link time down.

mod integration {
    pub mod child;
    pub mod helpers;
    pub mod media_support;
    pub mod ws;

    mod accounts;
    mod admission;
    mod authorization;
    mod bad_input;
    mod bench_smoke;
    mod blocks;
    mod cluster;
    mod config;
    mod conversations;
    mod deploy_artefacts;
    mod durability;
    mod export;
    mod faults;
    pub mod gateway;
    mod logins;
    mod media;
    mod memory;
    mod messages;
    mod observability;
    mod ops;
    mod reports;
    mod search;
    mod threads;
    mod user_admin;
}
