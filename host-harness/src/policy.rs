//! The one place a configuration becomes what the host enforces around an instance: the
//! origin it may reach, how that origin's certificate is checked, how long a report
//! call may run, and how long an outbox keeps an undelivered event. `Reporter::configure`,
//! the outbox and the relay all ask [`Policy::from_config`]; a new host-enforced option
//! belongs here.

use std::path::PathBuf;
use std::time::Duration;

use crate::bindings::{Config, InputError};
use crate::client::{Client, ClientCert, ServerCheck, TlsPolicy};
use crate::error::HostError;
use crate::files::MAX_CA_FILE_BYTES;
use crate::limits::Limits;
use crate::sandbox::{Opening, Origin};

/// The component's retry deadline when the configuration gives none (see the WIT).
const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_millis(30_000);

/// An undelivered outbox event becomes a dead letter after this long unless the
/// configuration says otherwise (see the WIT).
pub(crate) const DEFAULT_DEAD_LETTER_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// An outbox keeps a dead letter this many days unless the configuration says otherwise
/// (`deadLetterRetentionDays`, see the WIT).
pub(crate) const DEFAULT_RETENTION_DAYS: u32 = 30;
/// An outbox holds at most this many pending events unless the configuration says
/// otherwise (`maxPendingEvents`, see the WIT).
pub(crate) const DEFAULT_MAX_PENDING: u64 = 1_000_000;

/// What the host enforces for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The one origin the instance may reach, `server-url`'s (`None`, no usable origin,
    /// lets nothing out; the component refuses such a URL itself anyway), and how its
    /// certificate is checked (`verify`, `ca-file`).
    pub(crate) opening: Opening,
    /// Wall time a report call may take: the retry deadline plus the limits' margin.
    pub(crate) report_budget: Duration,
    /// Age after which an undelivered outbox event becomes a dead letter.
    pub(crate) dead_letter_after: Duration,
    /// How long an outbox keeps a dead letter.
    pub(crate) retention: Duration,
    /// The most events an outbox holds pending.
    pub(crate) max_pending: u64,
}

impl Default for Policy {
    /// Nothing reachable, and the documented defaults.
    fn default() -> Policy {
        Policy {
            opening: Opening {
                origin: None,
                tls: TlsPolicy::verified(None),
            },
            report_budget: DEFAULT_RETRY_DEADLINE,
            dead_letter_after: DEFAULT_DEAD_LETTER_AFTER,
            retention: days(DEFAULT_RETENTION_DAYS),
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

impl Policy {
    /// The policy of `config` under `limits`. The CA file is read now (and its trust
    /// roots kept in `client`), so a bad one is a configuration error naming `caFile`
    /// rather than a failed push later.
    pub(crate) fn from_config(
        config: &Config,
        limits: &Limits,
        client: &Client,
    ) -> Result<Policy, HostError> {
        if let Some(path) = &config.ca_file {
            check_ca_file(path.as_ref()).map_err(|message| {
                HostError::Config(InputError {
                    key: "caFile".into(),
                    message,
                })
            })?;
        }
        for (key, what, path) in [
            (
                "clientCertFile",
                "client certificate file",
                &config.client_cert_file,
            ),
            ("clientKeyFile", "client key file", &config.client_key_file),
        ] {
            if let Some(path) = path {
                check_tls_file(path.as_ref(), what).map_err(|message| {
                    HostError::Config(InputError {
                        key: key.into(),
                        message,
                    })
                })?;
            }
        }
        let server = if config.verify {
            ServerCheck::Verify {
                ca_file: config.ca_file.as_ref().map(PathBuf::from),
                system_roots: config.trust_system_roots.unwrap_or(true),
            }
        } else {
            ServerCheck::Insecure
        };
        let client_cert = config.client_cert_file.as_ref().map(|cert| ClientCert {
            cert_file: PathBuf::from(cert),
            key_file: config.client_key_file.as_ref().map(PathBuf::from),
        });
        let tls = TlsPolicy {
            server,
            client_cert,
        };
        client.tls_config(&tls).map_err(|e| {
            HostError::Config(InputError {
                key: e.config_key().into(),
                message: e.to_string(),
            })
        })?;
        let retry_deadline = config
            .retry_deadline_ms
            .map_or(DEFAULT_RETRY_DEADLINE, |ms| {
                Duration::from_millis(u64::from(ms))
            });
        Ok(Policy {
            opening: Opening {
                origin: Origin::of_url(&config.server_url),
                tls,
            },
            report_budget: retry_deadline + limits.report_margin,
            dead_letter_after: config
                .dead_letter_after_ms
                .map_or(DEFAULT_DEAD_LETTER_AFTER, Duration::from_millis),
            retention: days(
                config
                    .dead_letter_retention_days
                    .unwrap_or(DEFAULT_RETENTION_DAYS),
            ),
            max_pending: config.max_pending_events.unwrap_or(DEFAULT_MAX_PENDING),
        })
    }
}

/// A CA file must be a regular file of at most [`MAX_CA_FILE_BYTES`].
pub(crate) fn check_ca_file(path: &std::path::Path) -> Result<(), String> {
    check_tls_file(path, "CA file")
}

/// A TLS file (CA, client certificate, client key) must be a regular file of at most
/// [`MAX_CA_FILE_BYTES`].
fn check_tls_file(path: &std::path::Path, what: &str) -> Result<(), String> {
    crate::files::check_regular(path, Some(MAX_CA_FILE_BYTES))
        .map(drop)
        .map_err(|e| format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Config;

    fn config(server_url: &str) -> Config {
        Config::new(server_url)
    }

    #[test]
    fn defaults_follow_the_wit() {
        let limits = Limits::default();
        let policy = Policy::from_config(
            &config("https://h.example.com/x"),
            &limits,
            &Client::default(),
        )
        .unwrap();
        assert_eq!(
            policy.opening.origin,
            Origin::of_url("https://h.example.com:443/")
        );
        assert_eq!(policy.opening.tls, TlsPolicy::verified(None));
        assert_eq!(
            policy.report_budget,
            Duration::from_secs(30) + limits.report_margin
        );
        assert_eq!(policy.dead_letter_after, DEFAULT_DEAD_LETTER_AFTER);
    }

    #[test]
    fn options_set_the_policy() {
        let limits = Limits {
            report_margin: Duration::from_secs(1),
            ..Limits::default()
        };
        let mut config = config("http://127.0.0.1:8010/hook");
        config.verify = false;
        config.retry_deadline_ms = Some(2_500);
        config.dead_letter_after_ms = Some(60_000);
        let policy = Policy::from_config(&config, &limits, &Client::default()).unwrap();
        assert_eq!(policy.opening.tls.server, ServerCheck::Insecure);
        assert_eq!(policy.report_budget, Duration::from_millis(3_500));
        assert_eq!(policy.dead_letter_after, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error_naming_ca_file() {
        let mut config = config("https://h.example.com/");
        config.ca_file = Some("/nonexistent/status-push-ca.pem".into());
        match Policy::from_config(&config, &Limits::default(), &Client::default()) {
            Err(HostError::Config(e)) => {
                assert_eq!(e.key, "caFile");
                assert!(e.message.contains("status-push-ca.pem"), "{}", e.message);
            }
            other => panic!("expected a caFile error, got {other:?}"),
        }
    }
}
