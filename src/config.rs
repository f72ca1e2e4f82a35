//! Turns the WIT `config` record into validated [`Settings`], or a [`InputError`] that
//! names the option (with the seed's spelling) and says what it expects.

use base64::Engine as _;

use crate::inbound::Inbound;
use crate::secret::Secret;
use crate::signature::Signer;
use crate::{Auth, Config, InputError, ResultMode};

/// Connect timeout when the configuration gives none.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 10_000;
/// First-byte and between-bytes timeout when the configuration gives none.
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// Attempts per call when the configuration gives none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Time budget of one call when the configuration gives none.
pub const DEFAULT_RETRY_DEADLINE_MS: u32 = 30_000;
/// Largest request body when the configuration gives no `maxBodyBytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;
/// The most `maxBodyBytes` may be: a body this size still fits, with its payload tree,
/// in the 128 MiB a host gives an instance by default.
pub const MAX_BODY_BYTES_LIMIT: u64 = 32 << 20;
/// The most the configured headers may add up to (names, values, `: ` and CRLF). HTTP
/// servers commonly refuse heads over 8–64 KiB, and `wasi:http` hosts cap fields too: a
/// bigger set is refused here, at configure time, rather than by the host mid-push.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The longest `serverUrl` or `buildbotURL`.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Header names the component sets itself, for each request: configuring them would send
/// two values or one that defeats its purpose (one static idempotency key for every event).
const OWN_HEADERS: [&str; 6] = [
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-github-delivery",
    "x-hub-signature-256",
];

/// A validated configuration. Its `Debug` shows no credential: the `Authorization` value
/// and the signing key are [`Secret`]s, and configured header values are redacted (an API
/// key may travel under any header name).
pub struct Settings {
    /// Where the POST goes.
    pub target: Target,
    /// The configured headers in sending order, then `Content-Type`.
    pub headers: Vec<(String, String)>,
    /// The `Authorization` value from `user`/`password` or `auth`, sent after `headers`.
    pub authorization: Option<Secret>,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// What the payload contains.
    pub payload: PayloadOptions,
    /// The `format_fn` template source, already checked to parse.
    pub template: Option<String>,
    /// Which builds are pushed.
    pub selection: Selection,
    /// Whether to log requests and responses to stderr.
    pub debug: bool,
    /// Network timeouts.
    pub timeouts: Timeouts,
    /// How often and how long to try.
    pub retry: RetryPolicy,
    /// Request signing, if configured.
    pub signer: Option<Signer>,
    /// Who may ask the relay to push (the relay world only).
    pub inbound: Inbound,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if name.eq_ignore_ascii_case("content-type") {
                    value.as_str()
                } else {
                    crate::secret::REDACTED
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("Settings")
            .field("target", &crate::secret::redact_url(&self.target.url()))
            .field("headers", &headers)
            .field("authorization", &self.authorization)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("payload", &self.payload)
            .field("template", &self.template.as_ref().map(|_| "<format_fn>"))
            .field("selection", &self.selection)
            .field("debug", &self.debug)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("signer", &self.signer)
            .field("inbound", &self.inbound)
            .finish()
    }
}

impl Settings {
    /// Every header of a request, in sending order: the configured ones, `Content-Type`,
    /// then `Authorization`. The one place a credential leaves its [`Secret`].
    pub fn request_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(value) = &self.authorization {
            headers.push(("Authorization".into(), value.expose().to_string()));
        }
        headers
    }
}

/// Bounds on one call's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts, from 1.
    pub max_attempts: u32,
    /// Time budget of all attempts and waits.
    pub deadline_ms: u32,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// The parts of `serverUrl` a request is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// URL scheme.
    pub scheme: Scheme,
    /// `host[:port]` exactly as configured.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path_with_query: String,
}

impl Target {
    /// The URL without its fragment, for messages.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.authority, self.path_with_query)
    }
}

/// What goes into the payload besides the build itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadOptions {
    /// The master's URL, ending in `/`.
    pub buildbot_url: String,
    /// `wantProperties`.
    pub want_properties: bool,
    /// `wantSteps`.
    pub want_steps: bool,
    /// `wantLogs`.
    pub want_logs: bool,
    /// `wantPreviousBuild`.
    pub want_previous_build: bool,
}

/// Which builds to push; `None` selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `builders`.
    pub builders: Option<Vec<String>>,
    /// `tags`.
    pub tags: Option<Vec<String>>,
    /// `branches`.
    pub branches: Option<Vec<String>>,
    /// `schedulers`.
    pub schedulers: Option<Vec<String>>,
    /// `mode`; empty means all results.
    pub mode: Vec<ResultMode>,
}

/// Timeouts handed to `wasi:http` request options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout.
    pub connect_ms: u32,
    /// First-byte and between-bytes timeout.
    pub io_ms: u32,
}

fn error(key: &str, message: impl Into<String>) -> InputError {
    InputError {
        key: key.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Validates `config`; nothing is sent either way.
    pub fn from_config(config: Config) -> Result<Settings, InputError> {
        let target = parse_server_url(&config.server_url)?;
        if config.buildbot_url.len() > MAX_URL_BYTES {
            return Err(error(
                "buildbotURL",
                format!("is over {MAX_URL_BYTES} bytes"),
            ));
        }
        if !config.buildbot_url.ends_with('/') || parse_server_url(&config.buildbot_url).is_err() {
            return Err(error(
                "buildbotURL",
                "expected an http(s) URL ending in '/', like 'https://buildbot.example.org/'",
            ));
        }
        if config.want_logs && !config.want_steps {
            return Err(error(
                "wantLogs",
                "needs wantSteps: true, since logs belong to steps",
            ));
        }
        if config.verify && config.trust_system_roots == Some(false) && config.ca_file.is_none() {
            return Err(error(
                "trustSystemRoots",
                "false trusts caFile's certificates alone: it needs caFile",
            ));
        }
        if config.client_key_file.is_some() && config.client_cert_file.is_none() {
            return Err(error(
                "clientKeyFile",
                "needs clientCertFile: the key is the private key of that certificate",
            ));
        }
        let authorization = authorization(&config)?;
        let headers = configured_headers(&config.headers, authorization.is_some())?;
        if let Some(source) = &config.format_fn {
            crate::template::check(source).map_err(|message| error("format_fn", message))?;
        }
        let signer = config
            .signing
            .as_ref()
            .map(|s| Signer::new(s.scheme, &s.secret))
            .transpose()
            .map_err(|message| error("signingSecret", message))?;
        let retry = RetryPolicy {
            max_attempts: match config.max_attempts {
                Some(0) => return Err(error("maxAttempts", "expected at least 1")),
                other => other.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            },
            deadline_ms: positive("retryDeadlineSeconds", config.retry_deadline_ms)?
                .unwrap_or(DEFAULT_RETRY_DEADLINE_MS),
        };
        let timeouts = Timeouts {
            connect_ms: positive("connectTimeoutSeconds", config.connect_timeout_ms)?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            io_ms: positive("timeoutSeconds", config.timeout_ms)?.unwrap_or(DEFAULT_TIMEOUT_MS),
        };
        let max_body_bytes = match config.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) if (1024..=MAX_BODY_BYTES_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(error(
                    "maxBodyBytes",
                    format!("expected a whole number of bytes from 1024 to {MAX_BODY_BYTES_LIMIT}"),
                ))
            }
        };
        let inbound = Inbound::new(
            config.inbound_token.as_deref(),
            config.inbound_secret.as_deref(),
        )
        .map_err(|(key, message)| error(key, message))?;
        Ok(Settings {
            inbound,
            target,
            headers,
            authorization,
            max_body_bytes,
            payload: PayloadOptions {
                buildbot_url: config.buildbot_url,
                want_properties: config.want_properties,
                want_steps: config.want_steps,
                want_logs: config.want_logs,
                want_previous_build: config.want_previous_build,
            },
            template: config.format_fn,
            selection: Selection {
                builders: config.builders,
                tags: config.tags,
                branches: config.branches,
                schedulers: config.schedulers,
                mode: config.mode,
            },
            debug: config.debug,
            timeouts,
            retry,
            signer,
        })
    }
}

fn positive(key: &str, value: Option<u32>) -> Result<Option<u32>, InputError> {
    match value {
        Some(0) => Err(error(key, "expected a timeout above zero")),
        other => Ok(other),
    }
}

/// Parses an absolute `http(s)://host[:port][/path][?query]` URL. The fragment, which
/// HTTP never sends, is dropped.
pub fn parse_server_url(url: &str) -> Result<Target, InputError> {
    let bad = |why: &str| {
        error(
            "serverUrl",
            format!("{why}; expected an absolute http:// or https:// URL"),
        )
    };
    if url.len() > MAX_URL_BYTES {
        return Err(bad(&format!("is over {MAX_URL_BYTES} bytes")));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("contains whitespace or a control character"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad("has an unsupported scheme")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad("carries credentials; use user and password instead"));
    }
    let (host, port) =
        split_host_port(authority).ok_or_else(|| bad("has an invalid host or port"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']').is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !host_ok || port.is_some_and(|p| p.is_empty() || p.parse::<u16>().is_err()) {
        return Err(bad("has an invalid host or port"));
    }
    let path_with_query = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Target {
        scheme,
        authority: authority.to_string(),
        path_with_query,
    })
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => Some((host, Some(port))),
            None => Some((authority, None)),
        }
    }
}

/// The `Authorization` header value from `user`/`password` or `auth`, if any.
fn authorization(config: &Config) -> Result<Option<Secret>, InputError> {
    let basic = |user: &str, password: &str| {
        // As Python's requests does: Latin-1 when it fits, else UTF-8.
        let pair = format!("{user}:{password}");
        let bytes: Vec<u8> = if pair.chars().all(|c| u32::from(c) <= 0xff) {
            pair.chars().map(|c| c as u8).collect()
        } else {
            pair.into_bytes()
        };
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let value = match (&config.user, &config.password, &config.auth) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(error("auth", "give either user/password or auth, not both"))
        }
        (Some(user), Some(password), None) => {
            if user.contains(':') {
                return Err(error("user", "a basic-auth user name cannot contain ':'"));
            }
            Some(basic(user, password))
        }
        (Some(_), None, None) => return Err(error("password", "user needs a password")),
        (None, Some(_), None) => return Err(error("user", "password needs a user")),
        (None, None, Some(Auth::Basic(c))) => {
            if c.user.contains(':') {
                return Err(error("auth", "a basic-auth user name cannot contain ':'"));
            }
            Some(basic(&c.user, &c.password))
        }
        (None, None, Some(Auth::Bearer(token))) => {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(error(
                    "auth",
                    "a bearer token is visible ASCII, without spaces",
                ));
            }
            Some(format!("Bearer {token}"))
        }
        (None, None, None) => None,
    };
    Ok(value.map(Secret::from))
}

/// Headers a `wasi:http` host may refuse from a guest, or that framing owns.
const RESERVED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
    "te",
    "content-length",
];

/// The configured headers in order, without `Content-Type` (always JSON, as Buildbot
/// sends it), then `Content-Type`.
fn configured_headers(
    configured: &[(String, String)],
    has_credentials: bool,
) -> Result<Vec<(String, String)>, InputError> {
    let size: usize = configured
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return Err(error(
            "headers",
            format!(
                "the headers add up to {size} bytes, over the {} KiB a request head may carry",
                MAX_HEADER_BYTES / 1024
            ),
        ));
    }
    let mut headers = Vec::with_capacity(configured.len() + 1);
    for (name, value) in configured {
        let is_token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            return Err(error(
                "headers",
                format!(
                    "header name {name:?} is not an HTTP token (letters, digits, !#$%&'*+-.^_`|~)"
                ),
            ));
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(error(
                "headers",
                format!(
                    "the value of header {name:?} contains a control character (CR, LF, NUL, …)"
                ),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(error(
                "headers",
                format!("header {name:?} is set by the HTTP layer and cannot be configured"),
            ));
        }
        if OWN_HEADERS.contains(&lower.as_str()) {
            return Err(error(
                "headers",
                format!(
                    "header {name:?} is set by status-push for each event and cannot be configured"
                ),
            ));
        }
        if lower == "authorization" && has_credentials {
            return Err(error(
                "headers",
                "an Authorization header and user/password or auth were both given; keep one",
            ));
        }
        if lower == "content-type" {
            continue;
        }
        headers.push((name.clone(), value.clone()));
    }
    headers.push(("Content-Type".into(), "application/json".into()));
    Ok(headers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Credentials;

    pub(crate) fn config(server_url: &str) -> Config {
        Config {
            server_url: server_url.into(),
            buildbot_url: "http://buildbot.example.org/".into(),
            user: None,
            password: None,
            auth: None,
            headers: vec![],
            format_fn: None,
            builders: None,
            tags: None,
            branches: None,
            schedulers: None,
            mode: vec![],
            want_properties: false,
            want_steps: false,
            want_logs: false,
            want_previous_build: false,
            debug: false,
            verify: true,
            skip_encoding: false,
            connect_timeout_ms: None,
            timeout_ms: None,
            max_attempts: None,
            retry_deadline_ms: None,
            signing: None,
            ca_file: None,
            trust_system_roots: None,
            client_cert_file: None,
            client_key_file: None,
            dead_letter_after_ms: None,
            dead_letter_retention_days: None,
            max_pending_events: None,
            max_body_bytes: None,
            inbound_token: None,
            inbound_secret: None,
        }
    }

    fn key_of(config: Config) -> String {
        match Settings::from_config(config) {
            Ok(_) => "<accepted>".into(),
            Err(e) => e.key,
        }
    }

    #[test]
    fn url_parts_are_kept() {
        let t = parse_server_url("https://Hooks.example.com:8443/a/b?x=1&y=%20#frag").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.authority, "Hooks.example.com:8443");
        assert_eq!(t.path_with_query, "/a/b?x=1&y=%20");
        let t = parse_server_url("http://127.0.0.1:9").unwrap();
        assert_eq!(t.path_with_query, "/");
        let t = parse_server_url("http://[::1]:80?q").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path_with_query.as_str()),
            ("[::1]:80", "/?q")
        );
        assert_eq!(t.url(), "http://[::1]:80/?q");
    }

    #[test]
    fn bad_urls_are_refused_naming_server_url() {
        for url in [
            "",
            "hooks.example.com/x",
            "ftp://h/x",
            "http://",
            "http://h:99999/",
            "http://h:/",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/a\r\nX-Injected: 1",
            "http://[::1/",
        ] {
            let err = parse_server_url(url).expect_err(url);
            assert_eq!(err.key, "serverUrl", "{url}");
        }
    }

    #[test]
    fn each_invalid_option_names_its_key() {
        let mut c = config("http://h/");
        c.want_logs = true;
        assert_eq!(key_of(c), "wantLogs");

        let mut c = config("http://h/");
        c.buildbot_url = "http://buildbot.example.org".into();
        assert_eq!(key_of(c), "buildbotURL");

        let mut c = config("http://h/");
        c.headers = vec![("X-Ok".into(), "a\r\nX-Evil: 1".into())];
        assert_eq!(key_of(c), "headers");

        let mut c = config("http://h/");
        c.headers = vec![("Bad Name".into(), "v".into())];
        assert_eq!(key_of(c), "headers");

        let mut c = config("http://h/");
        c.headers = vec![("Host".into(), "elsewhere".into())];
        assert_eq!(key_of(c), "headers");

        let mut c = config("http://h/");
        c.user = Some("alice".into());
        assert_eq!(key_of(c), "password");

        let mut c = config("http://h/");
        c.user = Some("alice".into());
        c.password = Some("pw".into());
        c.auth = Some(Auth::Bearer("t".into()));
        assert_eq!(key_of(c), "auth");

        let mut c = config("http://h/");
        c.format_fn = Some("{{ build.number ".into());
        assert_eq!(key_of(c), "format_fn");

        let mut c = config("https://h/");
        c.trust_system_roots = Some(false);
        assert_eq!(key_of(c.clone()), "trustSystemRoots", "no root at all");
        c.ca_file = Some("/etc/ssl/private-ca.pem".into());
        assert!(Settings::from_config(c).is_ok(), "caFile's alone");

        let mut c = config("http://h/");
        c.timeout_ms = Some(0);
        assert_eq!(key_of(c), "timeoutSeconds");

        let mut c = config("http://h/");
        c.max_attempts = Some(0);
        assert_eq!(key_of(c), "maxAttempts");

        let mut c = config("http://h/");
        c.signing = Some(crate::Signing {
            scheme: crate::SigningScheme::StandardWebhooks,
            secret: "not-whsec".into(),
        });
        assert_eq!(key_of(c), "signingSecret");

        let mut c = config("http://h/");
        c.headers = vec![("X-Big".into(), "v".repeat(MAX_HEADER_BYTES))];
        assert_eq!(key_of(c), "headers");

        let mut c = config("http://h/");
        c.headers = vec![("Idempotency-Key".into(), "same-for-all".into())];
        assert_eq!(key_of(c), "headers");

        let mut c = config("http://h/");
        c.headers = vec![("authorization".into(), "Bearer x".into())];
        c.auth = Some(Auth::Bearer("t".into()));
        assert_eq!(key_of(c), "headers");

        let mut c = config(&format!("http://h/{}", "a".repeat(MAX_URL_BYTES)));
        c.headers = vec![];
        assert_eq!(key_of(c), "serverUrl");

        let mut c = config("http://h/");
        c.max_body_bytes = Some(MAX_BODY_BYTES_LIMIT + 1);
        assert_eq!(key_of(c), "maxBodyBytes");

        assert_eq!(key_of(config("http://h/")), "<accepted>");
    }

    #[test]
    fn settings_print_no_credentials() {
        let mut c = config("http://h/");
        c.auth = Some(Auth::Basic(Credentials {
            user: "alice".into(),
            password: "pw-hunter2".into(),
        }));
        c.signing = Some(crate::Signing {
            scheme: crate::SigningScheme::Github,
            secret: "sig-hunter2".into(),
        });
        c.headers = vec![("X-Api-Key".into(), "key-hunter2".into())];
        c.inbound_token = Some("inbound-hunter2-0123456789".into());
        c.server_url = "http://h/?token=q-hunter2".into();
        let shown = format!("{:?}", Settings::from_config(c).unwrap());
        // base64("alice:pw-hunter2") would show the password too.
        for secret in ["hunter2", "YWxpY2U6cHctaHVudGVyMg"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn content_type_is_always_json_and_last_before_auth() {
        let mut c = config("http://h/");
        c.headers = vec![
            ("X-Api-Key".into(), "k".into()),
            ("content-type".into(), "text/plain".into()),
        ];
        c.user = Some("alice".into());
        c.password = Some("s3cr3t:pw".into());
        let s = Settings::from_config(c).unwrap();
        assert_eq!(
            s.request_headers(),
            vec![
                ("X-Api-Key".to_string(), "k".to_string()),
                ("Content-Type".into(), "application/json".into()),
                ("Authorization".into(), "Basic YWxpY2U6czNjcjN0OnB3".into()),
            ]
        );
    }

    #[test]
    fn basic_auth_uses_latin1_like_requests() {
        let mut c = config("http://h/");
        c.auth = Some(Auth::Basic(Credentials {
            user: "j\u{f6}rg".into(),
            password: "p".into(),
        }));
        let s = Settings::from_config(c).unwrap();
        // base64(b"j\xf6rg:p")
        assert_eq!(s.request_headers().last().unwrap().1, "Basic avZyZzpw");
    }
}
