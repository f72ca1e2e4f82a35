//! Credentials as a type that cannot print itself, and the one list of header names whose
//! values are credentials, and the one URL redactor. Pure; the host library, its CLI and
//! the Buildbot plugin use these very items (natively), so each rule is written once.

use std::fmt;

/// What every redacted value prints as.
pub const REDACTED: &str = "<redacted>";

/// A password, signing secret, bearer token or `Authorization` value. `Debug` and
/// `Display` print [`REDACTED`]; the value is reachable only through [`Secret::expose`],
/// so every place that uses it is a place to look.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, for the one place that sends or signs with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The credential, unwrapped.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Parts of header names whose values are credentials: `Authorization`, cookies, API keys,
/// tokens, signatures (a signature is not a key, but it proves one and is not for logs).
const SECRET_HEADER_PARTS: [&str; 8] = [
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "signature",
    "api-key",
    "apikey",
];

/// Whether a header's value is a credential that logs must show as [`REDACTED`].
pub fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_HEADER_PARTS.iter().any(|part| lower.contains(part))
}

/// Where the userinfo of `rest` (a URL after `scheme://`) ends: `(end of the user, the
/// `@`)`; the user ends before the `@` when there is no password. A password may hold
/// `/`, `?`, `#` and `@`, so with a `:` before any of those the userinfo runs to the last
/// `@` (too much is hidden when a `@` sits in the query instead, never too little);
/// without one, a user alone ends at the first `@` before the path.
fn userinfo_end(rest: &str) -> Option<(usize, usize)> {
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest.find(':') {
        Some(colon) if colon < path_start && rest[colon..].contains('@') => {
            Some((colon, rest.rfind('@')?))
        }
        _ => {
            let at = rest[..path_start].find('@')?;
            Some((at, at))
        }
    }
}

/// Query parameters whose values are settings, not credentials: libpq's connection
/// options, which an outbox location shows in every log line. Any other value is hidden.
const PUBLIC_QUERY_PARAMETERS: [&str; 5] = [
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
];

/// `url` as logs may show it: the password of its userinfo and the value of every query
/// parameter replaced by [`REDACTED`] (tokens often travel as `?token=…`, PostgreSQL
/// passwords as `?password=…`). The one redactor of the project: the component, the host
/// library, the CLI and the Buildbot plugin all print URLs through it.
///
/// A password is often written without percent-encoding: see `userinfo_end`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    let rest = match scheme.and_then(|_| userinfo_end(rest)) {
        Some((user_end, at)) => {
            out.push_str(&rest[..user_end]);
            if user_end < at {
                out.push(':');
                out.push_str(REDACTED);
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (before, fragment) = match rest.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (rest, None),
    };
    match before.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _)) if PUBLIC_QUERY_PARAMETERS.contains(&name) => {
                        out.push_str(pair)
                    }
                    Some((name, _)) => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn credential_headers_are_recognised_whatever_their_case() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "x-hub-signature-256",
            "Webhook-Signature",
            "Cookie",
            "X-Auth-Token",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in ["Content-Type", "Idempotency-Key", "webhook-id", "X-Demo"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn query_values_are_redacted_in_urls() {
        assert_eq!(
            redact_url("https://h.example.com/p?token=abc&x&y=1#f"),
            "https://h.example.com/p?token=<redacted>&x&y=<redacted>#f"
        );
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }

    #[test]
    fn every_password_is_hidden_whatever_it_holds() {
        // Written as users write them: not percent-encoded, or encoded.
        for password in [
            "Ab/cd+=",
            "a?b",
            "a#b",
            "p@ss",
            "a:b:c",
            "50%off",
            "Ab%2Fcd",
            "x/y?z#w@v:u%",
        ] {
            for url in [
                format!("postgresql://ci:{password}@db.example:5433/status?sslmode=disable"),
                format!("https://bot:{password}@hooks.example.com/ci"),
                format!("postgres://ci@db/x?password={password}"),
            ] {
                let shown = redact_url(&url);
                assert!(!shown.contains(password), "{url} -> {shown}");
                assert!(shown.contains(REDACTED), "{url} -> {shown}");
            }
        }
        assert_eq!(
            redact_url("postgresql://ci:Ab/cd+=@db/x"),
            "postgresql://ci:<redacted>@db/x"
        );
        assert_eq!(
            redact_url("postgresql://ci@db.example/status"),
            "postgresql://ci@db.example/status"
        );
        assert_eq!(
            redact_url("/var/lib/outbox.sqlite"),
            "/var/lib/outbox.sqlite"
        );
    }
}
