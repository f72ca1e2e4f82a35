//! The parts of the `status-push` CLI that tests share: the inspection [`receiver`] that
//! `receive` and `demo` run (and the workspace's end-to-end tests push to), and the
//! relay service that `serve` runs: its accept loop and checks ([`serve`]), its
//! background delivery from an outbox ([`courier`]) and its [`metrics`]; and the
//! process's peak memory ([`usage`]), which `push --stats` and status-push-bench print;
//! and what both binaries share: their global options ([`loader`]) and their [`output`].

pub mod courier;
pub mod loader;
pub mod metrics;
pub mod output;
pub mod receiver;
pub mod serve;
pub mod usage;
