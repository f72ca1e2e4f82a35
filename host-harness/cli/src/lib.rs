//! The parts of the `status-push` CLI that tests share: the inspection [`receiver`] that
//! `receive` and `demo` run (and the workspace's end-to-end tests push to), and the
//! relay's accept loop that `serve` runs.

pub mod receiver;
pub mod serve;
