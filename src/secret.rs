//! Credentials as a type that cannot print itself, and the one list of header names whose
//! values are credentials. Pure; the host and its CLI use the same list for redaction.

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
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
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

/// `url` with the value of every query parameter replaced by [`REDACTED`], for logs:
/// tokens often travel in a URL's query (`?token=…`).
pub fn redact_url(url: &str) -> String {
    let (before, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let mut out = match before.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}={REDACTED}"),
                    None => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => before.to_string(),
    };
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
}
