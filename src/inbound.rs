//! Who may ask the relay to push: callers prove themselves with a bearer token
//! (`inboundToken`) or a Standard Webhooks signature of the request body
//! (`inboundSecret`). Pure: the request's headers, body and the time are arguments, so
//! the relay component and a host that queues requests itself check callers the same way.

use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::signature::Signer;
use crate::SigningScheme;

/// How far a `webhook-timestamp` may be from now, either way, in seconds.
pub const TOLERANCE_S: u64 = 5 * 60;

/// The configured ways in; none configured lets every caller in.
#[derive(Debug, Default)]
pub struct Inbound {
    token: Option<Secret>,
    signer: Option<Signer>,
}

/// Why a caller was refused; each is a 401 with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` and no `webhook-signature` headers.
    NoCredentials,
    /// A bearer token that is not the configured one.
    WrongToken,
    /// Standard Webhooks headers missing or malformed.
    MalformedSignature(&'static str),
    /// `webhook-timestamp` outside the tolerance window.
    Stale,
    /// No listed signature matches the body.
    BadSignature,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoCredentials => f.write_str(
                "no credentials: send Authorization: Bearer <inboundToken>, or sign the body (webhook-id, webhook-timestamp, webhook-signature)",
            ),
            Refusal::WrongToken => f.write_str("the bearer token is not the configured one"),
            Refusal::MalformedSignature(why) => write!(f, "malformed signature headers: {why}"),
            Refusal::Stale => write!(
                f,
                "webhook-timestamp is more than {TOLERANCE_S} seconds from now"
            ),
            Refusal::BadSignature => f.write_str("no webhook-signature matches the body"),
        }
    }
}

/// A caller that passed: by which means, and the `webhook-id` a host may remember to
/// refuse replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No authentication is configured.
    Anyone,
    /// The bearer token matched.
    Token,
    /// A signature matched; its message id.
    Signed {
        /// The `webhook-id`.
        id: String,
    },
}

impl Inbound {
    /// The ways in from `inboundToken` and `inboundSecret` (a `whsec_` key); the error
    /// names the key at fault.
    pub fn new(
        token: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Inbound, (&'static str, String)> {
        let token = match token {
            Some(t) if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err((
                    "inboundToken",
                    "expected at least 16 visible ASCII characters, without spaces".into(),
                ))
            }
            other => other.map(Secret::new),
        };
        let signer = secret
            .map(|s| Signer::new(SigningScheme::StandardWebhooks, s))
            .transpose()
            .map_err(|why| ("inboundSecret", why))?;
        Ok(Inbound { token, signer })
    }

    /// Whether any authentication is configured.
    pub fn is_configured(&self) -> bool {
        self.token.is_some() || self.signer.is_some()
    }

    /// Checks one request: `header(name)` gives a header's value (names compared
    /// case-insensitively by the caller), `body` is the raw body, `now_s` unix seconds.
    pub fn check(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now_s: u64,
    ) -> Result<Caller, Refusal> {
        if !self.is_configured() {
            return Ok(Caller::Anyone);
        }
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
        if let (Some(expected), Some(given)) = (&self.token, &bearer) {
            if bool::from(expected.expose().as_bytes().ct_eq(given.as_bytes())) {
                return Ok(Caller::Token);
            }
        }
        let signature = header("webhook-signature");
        match (&self.signer, signature) {
            (Some(signer), Some(signatures)) => {
                let id = header("webhook-id")
                    .filter(|id| !id.is_empty())
                    .ok_or(Refusal::MalformedSignature("webhook-id is missing"))?;
                let timestamp = header("webhook-timestamp")
                    .ok_or(Refusal::MalformedSignature("webhook-timestamp is missing"))?;
                let at: u64 = timestamp.trim().parse().map_err(|_| {
                    Refusal::MalformedSignature("webhook-timestamp is not unix seconds")
                })?;
                if at.abs_diff(now_s) > TOLERANCE_S {
                    return Err(Refusal::Stale);
                }
                if signer.verifies(&id, timestamp.trim(), body, &signatures) {
                    Ok(Caller::Signed { id })
                } else {
                    Err(Refusal::BadSignature)
                }
            }
            _ if bearer.is_some() && self.token.is_some() => Err(Refusal::WrongToken),
            _ if bearer.is_some() || header("webhook-signature").is_some() => {
                // Credentials of a kind this relay was not given a key for.
                Err(if self.token.is_some() {
                    Refusal::WrongToken
                } else {
                    Refusal::BadSignature
                })
            }
            _ => Err(Refusal::NoCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOKEN: &str = "t0ken-of-sixteen-chars";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const AT: u64 = 1614265330;

    fn check(inbound: &Inbound, headers: &[(&str, &str)], now: u64) -> Result<Caller, Refusal> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        inbound.check(
            &|name| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            },
            BODY,
            now,
        )
    }

    fn signed(id: &str, at: &str, signature: &str) -> Vec<(&'static str, String)> {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", signature.to_string()),
        ]
    }

    fn both() -> Inbound {
        Inbound::new(Some(TOKEN), Some(SECRET)).unwrap()
    }

    #[test]
    fn a_matching_token_or_signature_lets_the_caller_in() {
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            check(&both(), &[("Authorization", &bearer)], AT),
            Ok(Caller::Token)
        );
        let headers = signed("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SIGNATURE);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            check(&both(), &headers, AT + 299),
            Ok(Caller::Signed {
                id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into()
            })
        );
        assert_eq!(check(&Inbound::default(), &[], AT), Ok(Caller::Anyone));
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        let inbound = both();
        assert_eq!(check(&inbound, &[], AT), Err(Refusal::NoCredentials));
        assert_eq!(
            check(
                &inbound,
                &[("Authorization", "Bearer t0ken-of-sixteen-charX")],
                AT
            ),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            check(&inbound, &[("Authorization", "Basic dTpw")], AT),
            Err(Refusal::NoCredentials)
        );
        let cases = [
            (
                signed("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SIGNATURE),
                AT + 301,
                Refusal::Stale,
            ),
            (
                signed("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SIGNATURE),
                AT - 301,
                Refusal::Stale,
            ),
            (
                signed("msg_other", "1614265330", SIGNATURE),
                AT,
                Refusal::BadSignature,
            ),
            (
                signed("", "1614265330", SIGNATURE),
                AT,
                Refusal::MalformedSignature("webhook-id is missing"),
            ),
            (
                signed("m", "soon", SIGNATURE),
                AT,
                Refusal::MalformedSignature("webhook-timestamp is not unix seconds"),
            ),
        ];
        for (headers, now, refusal) in cases {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(check(&inbound, &headers, now), Err(refusal));
        }
    }

    #[test]
    fn weak_or_malformed_keys_are_configuration_errors() {
        assert_eq!(
            Inbound::new(Some("short"), None).unwrap_err().0,
            "inboundToken"
        );
        assert_eq!(
            Inbound::new(None, Some("not-whsec")).unwrap_err().0,
            "inboundSecret"
        );
        assert!(!Inbound::new(None, None).unwrap().is_configured());
        let shown = format!("{:?}", both());
        assert!(
            !shown.contains(TOKEN) && !shown.contains("MfKQ9r8"),
            "{shown}"
        );
    }
}
