//! Configured reporters kept between a courier's calls. Most of an event's cost was a new
//! instance, then parsing and applying its configuration in the component, for the same
//! few configurations over and over; a [`crate::Reporter`] is made to report any number
//! of events, so a courier keeps the idle ones, each under the exact configuration text it
//! was given, and hands one back only for a row with that same text.
//!
//! What is kept never differs from a fresh reporter in what it sends: its configuration
//! is compared whole (not by a hash that could collide onto another destination's
//! credentials), a call that trapped, hit a limit or was cancelled drops its instance,
//! and a probe (configured with one attempt) is never kept.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::group_commit::lock;
use super::{seal, Claimed};
use crate::{HostError, Outcome, Reporter, Runtime, Secret};

/// Idle reporters kept per courier: one per call it runs at once, so a courier with one
/// configuration never makes another, and a few configurations share the room.
const KEPT: usize = super::schedule::MAX_IN_FLIGHT;

/// A courier's idle reporters, oldest first.
#[derive(Default)]
pub(super) struct Reporters {
    idle: Mutex<VecDeque<(Secret, Reporter)>>,
}

impl Reporters {
    /// Reports `claimed` with its row's `contents`, on an idle reporter of the same
    /// configuration or a new one. A probe of a failing destination makes one attempt,
    /// not the configuration's `maxAttempts`: the circuit, not the component, spaces the
    /// probes. The documents go over as JSON: a row never makes the host open a file
    /// (logs were read in when queued).
    pub(super) async fn call(
        &self,
        runtime: &Runtime,
        claimed: &Claimed,
        contents: &seal::Contents,
    ) -> Result<Outcome, HostError> {
        let documents = contents.documents.expose();
        if documents.contains("\"content_file\"") {
            // Only a row of an earlier release can name one: its file is not opened.
            return Err(HostError::Event(crate::InputError {
                key: "content_file".into(),
                message: CONTENT_FILE_IN_ROW.into(),
            }));
        }
        let config = contents.config.expose();
        let kept = if claimed.probe {
            None
        } else {
            self.take(config)
        };
        let (key, mut reporter) = match kept {
            Some(kept) => kept,
            None => (
                Secret::new(config),
                configured(runtime, config, claimed.probe).await?,
            ),
        };
        let result = reporter.report_json(claimed.row.event, documents).await;
        // A push failure is the component's own answer: the instance is as it was.
        let clean = matches!(result, Ok(_) | Err(HostError::Push(_)));
        if clean && !claimed.probe {
            self.keep(key, reporter);
        }
        result
    }

    /// An idle reporter of `config`, with the key it is kept under.
    fn take(&self, config: &str) -> Option<(Secret, Reporter)> {
        let mut idle = lock(&self.idle);
        let at = idle.iter().rposition(|(kept, _)| kept.expose() == config)?;
        idle.remove(at)
    }

    fn keep(&self, config: Secret, reporter: Reporter) {
        let mut idle = lock(&self.idle);
        if idle.len() >= KEPT {
            // The least recently used goes; its instance slot returns to the pool.
            idle.pop_front();
        }
        idle.push_back((config, reporter));
    }
}

/// A new reporter under `config` (with one attempt for a probe).
async fn configured(runtime: &Runtime, config: &str, probe: bool) -> Result<Reporter, HostError> {
    let mut reporter = runtime.reporter().await?;
    let mut parsed = reporter.parse_config(config).await?;
    if probe {
        parsed.max_attempts = Some(1);
    }
    reporter.configure(parsed).await?;
    Ok(reporter)
}

/// Why a stored event naming a `content_file` is a dead letter.
const CONTENT_FILE_IN_ROW: &str =
    "an outbox row names a file to read; the outbox never opens one (nothing was sent)";
