//! The outbox key and sealed rows. What delivery reads of a row (its configuration with
//! its credentials, its documents) is stored sealed with ChaCha20-Poly1305 under a key
//! the hosts hold and the database never does, with associated data that binds it to
//! its row (destination, build, sequence number, event): a row edited, copied onto
//! another, pointed elsewhere or written by hand does not open, and is never sent.
//!
//! A key file holds one key per line, base64 of 32 random bytes: the first line seals,
//! every line opens (a rotation adds a line on top). A sealed value names the key that
//! sealed it by a short id, so opening picks the right line.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable naming the key file, for hosts given none explicitly.
pub const KEY_FILE_ENV: &str = "STATUS_PUSH_OUTBOX_KEY_FILE";

/// How a sealed value starts in a row: the format's version, then base64 of
/// `key id (4 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
const PREFIX: &str = "sealed1:";
/// The bytes of one key.
const KEY_BYTES: usize = 32;
/// The bytes of a key's id in a sealed value.
const ID_BYTES: usize = 4;
/// The largest key file read: thousands of keys, far more than a rotation needs.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a key file or a key text cannot be used. Never repeats a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written, or is not a key file.
    #[error("outbox key file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A line of the key text is not base64 of 32 bytes.
    #[error(
        "outbox key: line {line} is not a key (base64 of 32 bytes, as `status-push keygen` writes)"
    )]
    NotAKey {
        /// The line, from 1.
        line: usize,
    },
    /// The key text holds no key.
    #[error("outbox key: no key given (`status-push keygen PATH` writes a key file)")]
    Empty,
    /// The system's random number generator failed.
    #[error("outbox key: no randomness from the system")]
    Random,
}

/// Why a sealed value did not open: it was not sealed by this outbox's key, so nothing
/// of its row may be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    /// Not a sealed value at all (plaintext, or another format).
    #[error("not sealed by this outbox's key (written without the key); nothing of it was sent or opened")]
    NotSealed,
    /// Sealed under a key this host's key file does not hold.
    #[error("sealed by a key that is not in this host's key file (key id {0}); nothing of it was sent or opened (give this host the outbox's key file, then redeliver)")]
    UnknownKey(String),
    /// The key is known but the value or its row was altered.
    #[error("not sealed by this outbox's key for this row (altered, or copied from another row); nothing of it was sent or opened")]
    Altered,
}

/// One key and its id.
struct Key {
    id: [u8; ID_BYTES],
    key: LessSafeKey,
}

/// The keys of an outbox: the first seals, every one opens. Prints only the keys' ids.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("KeyRing").field("ids", &ids).finish()
    }
}

impl KeyRing {
    /// Reads a key text: one key per line (base64 of 32 bytes), the first sealing;
    /// blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut bytes = BASE64
                .decode(line)
                .map_err(|_| KeyError::NotAKey { line: n + 1 })?;
            let key = key_from(&bytes);
            bytes.fill(0);
            keys.push(key.ok_or(KeyError::NotAKey { line: n + 1 })?);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// Reads the key file at `path`, which its owner alone may read (as `keygen` makes
    /// it): one shared with its group or others is refused, naming the fix.
    pub fn read(path: &Path) -> Result<KeyRing, KeyError> {
        let file_error = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        refuse_shared(path).map_err(file_error)?;
        let text = crate::files::read_text(path, MAX_KEY_FILE_BYTES)
            .map_err(|e| file_error(e.to_string()))?;
        KeyRing::parse(&text).map_err(|e| match e {
            KeyError::NotAKey { line } => file_error(format!(
                "line {line} is not a key (base64 of 32 bytes, as `status-push keygen` writes)"
            )),
            KeyError::Empty => {
                file_error("holds no key (`status-push keygen PATH` writes a key file)".into())
            }
            other => other,
        })
    }

    /// Writes a new key file at `path` with one fresh key, readable by its owner only;
    /// an existing file is never overwritten. Returns the new key's id.
    pub fn write_new(path: &Path) -> Result<String, KeyError> {
        let file_error = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        let line = new_key_line()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                file_error("already exists; nothing was written (a rotation adds a new key as its first line: see docs/outbox-key.md)".into())
            }
            _ => file_error(format!("cannot create: {e}")),
        })?;
        use std::io::Write;
        file.write_all(line.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(format!("cannot write: {e}")))?;
        let ring = KeyRing::parse(&line)?;
        Ok(ring.sealing_id())
    }

    /// The key file of `path` if it exists, else a new one made there (readable by its
    /// owner only). Hosts opening the same new outbox together end up with one key: the
    /// file appears whole or not at all (written aside, then linked into place).
    pub fn read_or_create(path: &Path) -> Result<KeyRing, KeyError> {
        if path.exists() {
            return KeyRing::read(path);
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".new-{}", std::process::id()));
        let aside = PathBuf::from(aside);
        let _ = std::fs::remove_file(&aside);
        KeyRing::write_new(&aside)?;
        let linked = std::fs::hard_link(&aside, path);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(KeyError::File {
                    path: path.to_path_buf(),
                    message: format!("cannot create: {e}"),
                })
            }
        }
        KeyRing::read(path)
    }

    /// The id of the sealing key (the first line's), as errors and `Debug` show it.
    pub fn sealing_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// Seals `plaintext` under the first key, bound to `binding` (associated data).
    pub fn seal(&self, plaintext: &[u8], binding: &[u8]) -> Result<String, KeyError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Random)?;
        let mut sealed = Vec::with_capacity(ID_BYTES + NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(&key.id);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding),
                &mut body,
            )
            .map_err(|_| KeyError::Random)?;
        sealed.extend_from_slice(&body);
        let mut text = String::with_capacity(PREFIX.len() + sealed.len() * 4 / 3 + 4);
        text.push_str(PREFIX);
        BASE64.encode_string(&sealed, &mut text);
        Ok(text)
    }

    /// Opens a value [`KeyRing::seal`] made with `binding`, under whichever key of the
    /// ring sealed it.
    pub fn open(&self, sealed: &str, binding: &[u8]) -> Result<Vec<u8>, Unsealed> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| BASE64.decode(b).ok())
            .filter(|b| b.len() >= ID_BYTES + NONCE_LEN + 16)
            .ok_or(Unsealed::NotSealed)?;
        let (id, rest) = bytes.split_at(ID_BYTES);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Unsealed::UnknownKey(hex(id)))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::NotSealed)?;
        let mut body = body.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(binding), &mut body)
            .map_err(|_| Unsealed::Altered)?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }

    /// Whether `sealed` was sealed by the first key (a rotation re-seals the others).
    pub fn sealed_by_first(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(PREFIX)
            .and_then(|b| BASE64.decode(b).ok())
            .is_some_and(|b| b.get(..ID_BYTES) == Some(&self.keys[0].id[..]))
    }
}

/// A key's line: base64 of 32 fresh random bytes.
fn new_key_line() -> Result<String, KeyError> {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    let line = BASE64.encode(bytes);
    bytes.fill(0);
    Ok(line)
}

/// A key from its bytes, and its id: the first bytes of a SHA-256 of it under a label of
/// its own, so the id tells nothing of the key.
fn key_from(bytes: &[u8]) -> Option<Key> {
    use sha2::Digest;
    if bytes.len() != KEY_BYTES {
        return None;
    }
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
    let digest = sha2::Sha256::new()
        .chain_update(b"status-push outbox key id\0")
        .chain_update(bytes)
        .finalize();
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&digest[..ID_BYTES]);
    Some(Key {
        id,
        key: LessSafeKey::new(unbound),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a key file its group or others may read or write.
fn refuse_shared(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "is readable by its group or others (mode {mode:o}) and holds the outbox key: chmod 600 {}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Which row a sealed value belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowId<'a> {
    /// The destination's target (the origin of its `serverUrl`).
    pub(crate) destination: &'a str,
    pub(crate) build_key: &'a str,
    pub(crate) seq: i64,
    pub(crate) event: &'a str,
}

/// What delivery reads of a row, opened. Prints nothing of itself.
#[derive(Debug, Clone)]
pub(crate) struct Contents {
    pub(crate) config: crate::Secret,
    pub(crate) documents: crate::Secret,
}

/// A row's configuration and documents sealed for `row`: `(config, documents)`.
pub(crate) fn seal_row(
    keys: &KeyRing,
    row: RowId<'_>,
    config: &str,
    documents: &str,
) -> Result<(String, String), KeyError> {
    let bound = |part| binding(part, row.destination, row.build_key, row.seq, row.event);
    Ok((
        keys.seal(config.as_bytes(), &bound("config"))?,
        keys.seal(documents.as_bytes(), &bound("documents"))?,
    ))
}

/// Opens what [`seal_row`] sealed for `row`.
pub(crate) fn open_row(
    keys: &KeyRing,
    row: RowId<'_>,
    config: &str,
    documents: &str,
) -> Result<Contents, Unsealed> {
    let bound = |part| binding(part, row.destination, row.build_key, row.seq, row.event);
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| Unsealed::Altered);
    Ok(Contents {
        config: text(keys.open(config, &bound("config"))?)?.into(),
        documents: text(keys.open(documents, &bound("documents"))?)?.into(),
    })
}

/// What a sealed value of a row is bound to: which part it is (`config`, `documents`),
/// its destination, build, sequence number and event. Each field is length-prefixed, so
/// no two different rows give the same bytes.
fn binding(part: &str, destination: &str, build_key: &str, seq: i64, event: &str) -> Vec<u8> {
    let seq = seq.to_string();
    let mut out = Vec::with_capacity(64 + destination.len() + build_key.len());
    out.extend_from_slice(b"status-push outbox row v1");
    for field in [part, destination, build_key, &seq, event] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// What the outbox's key check is bound to: a value sealed once per outbox, which a host
/// opens when it opens the outbox, so a host given the wrong key file is refused at once
/// rather than turning every event it claims into a dead letter.
pub(crate) const KEY_CHECK: &[u8] = b"status-push outbox key check v1";

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[&str]) -> KeyRing {
        KeyRing::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old, new) = (new_key_line().unwrap(), new_key_line().unwrap());
        let before = ring(&[&old]);
        // Long enough that base64 of random bytes never holds it by chance ("pw" did, one
        // run in a few dozen).
        let plaintext = b"{\"password\":\"correct-horse-battery-staple\"}";
        let sealed = before.seal(plaintext, b"row 1").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("correct-horse"));
        assert!(!sealed.contains("password"));
        let after = ring(&[&new, "", "# the previous key", &old]);
        assert_eq!(after.open(&sealed, b"row 1").unwrap(), plaintext);
        assert!(!after.sealed_by_first(&sealed));
        let resealed = after.seal(b"x", b"row 1").unwrap();
        assert!(after.sealed_by_first(&resealed));
        assert!(matches!(
            before.open(&resealed, b"row 1"),
            Err(Unsealed::UnknownKey(_))
        ));
    }

    #[test]
    fn an_altered_value_another_binding_or_plaintext_does_not_open() {
        let keys = ring(&[&new_key_line().unwrap()]);
        let sealed = keys.seal(b"secret config", b"row 1").unwrap();
        assert_eq!(keys.open(&sealed, b"row 2"), Err(Unsealed::Altered));
        let mut bytes = BASE64.decode(&sealed[PREFIX.len()..]).unwrap();
        for i in [0, ID_BYTES, ID_BYTES + NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let flipped = format!("{PREFIX}{}", BASE64.encode(&bytes));
            assert!(keys.open(&flipped, b"row 1").is_err(), "byte {i}");
            bytes[i] ^= 1;
        }
        assert_eq!(
            keys.open("{\"serverUrl\":\"http://x\"}", b"row 1"),
            Err(Unsealed::NotSealed)
        );
        assert_eq!(
            keys.open("sealed1:AAAA", b"row 1"),
            Err(Unsealed::NotSealed)
        );
    }

    #[test]
    fn bindings_of_different_rows_differ() {
        let a = binding("config", "http://a:80", "b|1", 12, "started");
        assert_ne!(a, binding("documents", "http://a:80", "b|1", 12, "started"));
        assert_ne!(a, binding("config", "http://a:80", "b|1", 1, "started"));
        assert_ne!(a, binding("config", "http://a:80", "b|11", 2, "started"));
        assert_ne!(a, binding("config", "http://a:80", "b|1", 12, "finished"));
        assert_ne!(a, binding("config", "http://b:80", "b|1", 12, "started"));
    }

    #[test]
    fn a_bad_key_text_is_refused_without_repeating_it() {
        let short = BASE64.encode([7u8; 16]);
        let error = KeyRing::parse(&format!("{}\n{short}", new_key_line().unwrap()))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains(&short), "{error}");
        assert!(matches!(KeyRing::parse("\n# none\n"), Err(KeyError::Empty)));
        let keys = ring(&[&new_key_line().unwrap()]);
        let shown = format!("{keys:?}");
        assert!(shown.contains(&keys.sealing_id()), "{shown}");
    }

    #[test]
    fn keygen_writes_an_owner_only_file_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("status-push-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("outbox.key");
        let id = KeyRing::write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(KeyRing::read(&path).unwrap().sealing_id(), id);
        let before = std::fs::read(&path).unwrap();
        let refused = KeyRing::write_new(&path).err().unwrap().to_string();
        assert!(refused.contains("already exists"), "{refused}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(KeyRing::read_or_create(&path).unwrap().sealing_id(), id);
        let made = dir.join("made.key");
        let ring = KeyRing::read_or_create(&made).unwrap();
        assert_eq!(
            KeyRing::read(&made).unwrap().sealing_id(),
            ring.sealing_id()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = KeyRing::read(&path).err().unwrap().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
