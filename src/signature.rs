//! Request signing (Standard Webhooks, GitHub) and the delivery id receivers deduplicate
//! on. Pure: the timestamp is an argument.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{EventKind, SigningScheme};

/// A signing key, checked at `configure`. Its `Debug` shows the scheme, never the key.
pub struct Signer {
    scheme: SigningScheme,
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme)
            .field("key", &crate::secret::REDACTED)
            .finish()
    }
}

impl Signer {
    /// Checks `secret` for `scheme`: Standard Webhooks secrets are `whsec_` + base64.
    pub fn new(scheme: SigningScheme, secret: &str) -> Result<Signer, String> {
        let key = match scheme {
            SigningScheme::StandardWebhooks => {
                let encoded = secret
                    .strip_prefix("whsec_")
                    .ok_or("a Standard Webhooks secret starts with whsec_")?;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| "the part after whsec_ is not base64")?
            }
            SigningScheme::Github => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the signing secret is empty".into());
        }
        Ok(Signer { scheme, key })
    }

    /// The headers that sign `body`, sent as delivery `id` at unix time `timestamp`.
    pub fn headers(&self, id: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
        match self.scheme {
            SigningScheme::StandardWebhooks => {
                let mut mac = self.mac();
                mac.update(format!("{id}.{timestamp}.").as_bytes());
                mac.update(body);
                let signature =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                vec![
                    ("webhook-id".into(), id.into()),
                    ("webhook-timestamp".into(), timestamp.to_string()),
                    ("webhook-signature".into(), format!("v1,{signature}")),
                ]
            }
            SigningScheme::Github => {
                let mut mac = self.mac();
                mac.update(body);
                vec![
                    ("X-GitHub-Delivery".into(), id.into()),
                    (
                        "X-Hub-Signature-256".into(),
                        format!("sha256={}", hex(&mac.finalize().into_bytes())),
                    ),
                ]
            }
        }
    }

    /// Checks a Standard Webhooks signature of `body`: `signatures` is the
    /// `webhook-signature` header (space-separated `v1,<base64>` entries, so a sender
    /// rotating keys may send several); any one that matches is enough. Compared in
    /// constant time. The timestamp window is the caller's to check.
    pub fn verifies(&self, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
        let mut matched = false;
        for entry in signatures.split_whitespace() {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                continue;
            };
            let Ok(candidate) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            let mut mac = self.mac();
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            // Every entry is checked, so the time taken does not say which one matched.
            matched |= mac.verify_slice(&candidate).is_ok();
        }
        matched
    }

    /// Checks a GitHub signature of `body`: `header` is `X-Hub-Signature-256`
    /// (`sha256=<hex HMAC-SHA256>`). Compared in constant time.
    pub fn verifies_github(&self, body: &[u8], header: &str) -> bool {
        let Some(candidate) = header.trim().strip_prefix("sha256=").and_then(unhex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&candidate).is_ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }
}

/// Lower-case hex. Not `format!("{b:02x}")` per byte: that is a formatter call and a
/// `String` per byte, and every event's delivery id goes through here.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The delivery id of one event: the same for every attempt, every call and every
/// process, for the same destination (`server_url`), master (`buildbot_url`), build and
/// event. Two reporters pushing the same build to one receiver get different ids.
pub fn delivery_id(server_url: &str, buildbot_url: &str, buildid: i64, kind: EventKind) -> String {
    let event = match kind {
        EventKind::Started => "started",
        EventKind::Finished => "finished",
    };
    let digest = Sha256::new()
        .chain_update(server_url)
        .chain_update("\n")
        .chain_update(buildbot_url)
        .chain_update("\n")
        .chain_update(itoa::Buffer::new().format(buildid))
        .chain_update("\n")
        .chain_update(event)
        .finalize();
    let mut id = String::from("sp_");
    id.push_str(&hex(&digest[..16]));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_published_test_vector() {
        let signer = Signer::new(SigningScheme::Github, "It's a Secret to Everybody").unwrap();
        let headers = signer.headers("id-1", 0, b"Hello, World!");
        assert_eq!(
            headers,
            vec![
                ("X-GitHub-Delivery".to_string(), "id-1".to_string()),
                (
                    "X-Hub-Signature-256".into(),
                    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn github_signatures_verify() {
        let signer = Signer::new(SigningScheme::Github, "It's a Secret to Everybody").unwrap();
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signer.verifies_github(b"Hello, World!", good));
        assert!(!signer.verifies_github(b"Hello, World?", good));
        assert!(!signer.verifies_github(b"Hello, World!", &good[..good.len() - 2]));
        assert!(!signer.verifies_github(b"Hello, World!", "sha1=00"));
        assert!(!signer.verifies_github(b"Hello, World!", "sha256=zz"));
        assert!(!signer.verifies_github(b"Hello, World!", "sha256=é1"));
    }

    #[test]
    fn standard_webhooks_published_test_vector() {
        let signer = Signer::new(
            SigningScheme::StandardWebhooks,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        let headers = signer.headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            headers[2].1,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            headers[1],
            ("webhook-timestamp".into(), "1614265330".into())
        );
    }

    #[test]
    fn standard_webhooks_signatures_verify_with_any_listed_key() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signer = Signer::new(SigningScheme::StandardWebhooks, secret).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        assert!(signer.verifies(id, "1614265330", body, good));
        assert!(signer.verifies(id, "1614265330", body, &format!("v1,bm90IGl0 {good}")));
        assert!(!signer.verifies(id, "1614265331", body, good));
        assert!(!signer.verifies(id, "1614265330", b"{}", good));
        assert!(!signer.verifies(id, "1614265330", body, "v1,bm90IGl0 v2,xyz"));
        assert!(!signer.verifies(id, "1614265330", body, ""));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(Signer::new(
            SigningScheme::StandardWebhooks,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        )
        .is_err());
        assert!(Signer::new(SigningScheme::StandardWebhooks, "whsec_***").is_err());
        assert!(Signer::new(SigningScheme::Github, "").is_err());
    }

    #[test]
    fn delivery_ids_are_stable_per_destination_master_build_and_event() {
        let id =
            |server: &str, master: &str, build: i64, kind| delivery_id(server, master, build, kind);
        let a = id("http://r/", "http://bb/", 20, EventKind::Started);
        assert_eq!(a, id("http://r/", "http://bb/", 20, EventKind::Started));
        assert_ne!(a, id("http://r/", "http://bb/", 20, EventKind::Finished));
        assert_ne!(a, id("http://r/", "http://bb/", 21, EventKind::Started));
        assert_ne!(a, id("http://r/", "http://other/", 20, EventKind::Started));
        assert_ne!(
            a,
            id("http://r/other", "http://bb/", 20, EventKind::Started)
        );
        assert!(a.starts_with("sp_") && a.len() == 35, "{a}");
        // Ids are stored in outboxes and seen by receivers: the derivation never changes.
        // Python: "sp_" + sha256(b"<server>\n<master>\n<buildid>\n<event>").hexdigest()[:32]
        assert_eq!(
            id(
                "http://r.example/hook",
                "http://bb.example/",
                42,
                EventKind::Finished
            ),
            "sp_04970e1f3aee59d2e197dbee789f61b4"
        );
    }
}
