//! The request body as it is written: the encoded payload, with each streamed log text
//! spliced in where its placeholder stands, escaped piece by piece so that no log is
//! ever whole in memory. Pure: the sources and the sink are arguments.

use serde_json::Value;

use crate::encoder;

/// How much is buffered before the sink gets it.
pub const FLUSH_AT: usize = 64 * 1024;
/// How much is read from a log source at a time.
pub const READ_SIZE: u64 = 64 * 1024;

/// A log text arriving in pieces; `Ok(None)` is its end.
pub trait TextSource {
    /// The next bytes (at most `max`), or `None` at the end.
    fn read(&mut self, max: u64) -> Result<Option<Vec<u8>>, String>;
}

/// The placeholder a streamed log's text (log `logid`) stands as in the payload: unique
/// per render (`nonce`), so no real text is ever mistaken for it.
pub fn placeholder(nonce: u64, logid: i64) -> String {
    format!("\u{0}status-push:stream:{nonce:016x}:{logid}\u{0}")
}

/// Why the body could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// A log source failed.
    Source(String),
    /// The sink (the connection) failed.
    Sink,
    /// The body grew past its limit (`maxBodyBytes`).
    TooLarge,
}

/// Encodes `value` like [`encoder::write_value`] and hands it to `sink` in pieces of at
/// most about [`FLUSH_AT`] bytes; a string equal to `placeholder(nonce, i)` is replaced by
/// the JSON string of the text of the source keyed `i`. Invalid UTF-8 in a source becomes
/// U+FFFD.
pub fn write_streamed(
    value: &Value,
    nonce: u64,
    sources: &mut [(i64, &mut dyn TextSource)],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ()>,
) -> Result<(), BodyError> {
    let prefix = placeholder(nonce, 0);
    let prefix = &prefix[..prefix.rfind(':').unwrap_or(0) + 1];
    let mut failure = None;
    let mut out = Vec::with_capacity(FLUSH_AT);
    encoder::write_value_spliced(&mut out, value, &mut |s, out| {
        let Some(key) = s
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('\u{0}'))
            .and_then(|i| i.parse::<i64>().ok())
        else {
            return false;
        };
        let Some((_, source)) = sources.iter_mut().find(|(k, _)| *k == key) else {
            return false;
        };
        if let Err(e) = splice(&mut **source, out, sink) {
            failure.get_or_insert(e);
        }
        true
    });
    if let Some(e) = failure {
        return Err(e);
    }
    flush(&mut out, sink)
}

fn flush(
    out: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ()>,
) -> Result<(), BodyError> {
    if !out.is_empty() {
        sink(out).map_err(|()| BodyError::Sink)?;
        out.clear();
    }
    Ok(())
}

/// Writes one source's text as a JSON string, flushing as it goes.
fn splice(
    source: &mut dyn TextSource,
    out: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ()>,
) -> Result<(), BodyError> {
    out.push(b'"');
    // Bytes of a character split across two reads wait here for the rest.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(bytes) = source.read(READ_SIZE).map_err(BodyError::Source)? {
        carry.extend_from_slice(&bytes);
        let valid = match std::str::from_utf8(&carry) {
            Ok(_) => carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes: escape what is decodable, lossily.
            Err(_) => carry.len(),
        };
        encoder::write_str_content(out, &String::from_utf8_lossy(&carry[..valid]));
        carry.drain(..valid);
        if out.len() >= FLUSH_AT {
            flush(out, sink)?;
        }
    }
    encoder::write_str_content(out, &String::from_utf8_lossy(&carry));
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Hands out a text in pieces of the given sizes.
    struct Pieces {
        data: Vec<u8>,
        sizes: Vec<usize>,
    }

    impl TextSource for Pieces {
        fn read(&mut self, max: u64) -> Result<Option<Vec<u8>>, String> {
            if self.data.is_empty() {
                return Ok(None);
            }
            let n = self
                .sizes
                .pop()
                .unwrap_or(usize::MAX)
                .min(max as usize)
                .min(self.data.len());
            Ok(Some(self.data.drain(..n).collect()))
        }
    }

    fn streamed(value: &Value, texts: &[&[u8]], sizes: &[usize]) -> (String, usize) {
        let mut sources: Vec<Pieces> = texts
            .iter()
            .map(|t| Pieces {
                data: t.to_vec(),
                sizes: sizes.to_vec(),
            })
            .collect();
        let mut refs: Vec<(i64, &mut dyn TextSource)> = sources
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (i as i64, s as &mut dyn TextSource))
            .collect();
        let mut body = Vec::new();
        let mut calls = 0;
        write_streamed(value, 7, &mut refs, &mut |piece| {
            calls += 1;
            body.extend_from_slice(piece);
            Ok(())
        })
        .unwrap();
        (String::from_utf8(body).unwrap(), calls)
    }

    #[test]
    fn streamed_text_equals_the_inline_encoding_whatever_the_read_sizes() {
        let text = "Grüße 🚀\n\"quoted\" \\ tab\t日本語\u{1}".repeat(50);
        let inline =
            String::from_utf8(encoder::to_vec(&json!({"a": 1, "log": text, "z": [true]}))).unwrap();
        let with_hole = json!({"a": 1, "log": placeholder(7, 0), "z": [true]});
        // Sizes 1..7 split multi-byte characters at every possible offset.
        for size in 1..8 {
            let (body, _) = streamed(&with_hole, &[text.as_bytes()], &[size; 10_000]);
            assert_eq!(body, inline, "read size {size}");
        }
    }

    #[test]
    fn several_holes_each_get_their_own_source() {
        let value = json!([placeholder(7, 1), "plain", placeholder(7, 0)]);
        let (body, _) = streamed(&value, &[b"zero", b"one"], &[]);
        assert_eq!(body, r#"["one", "plain", "zero"]"#);
    }

    #[test]
    fn other_nonces_and_indices_are_plain_strings() {
        let value = json!([placeholder(8, 0), placeholder(7, 5)]);
        let (body, _) = streamed(&value, &[b"x"], &[]);
        assert_eq!(body, String::from_utf8(encoder::to_vec(&value)).unwrap());
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let (body, _) = streamed(&json!(placeholder(7, 0)), &[b"ok \xff\xfe end"], &[2; 100]);
        assert_eq!(body, r#""ok \ufffd\ufffd end""#);
    }

    #[test]
    fn a_large_text_reaches_the_sink_in_bounded_pieces() {
        let text = vec![b'x'; 5 * FLUSH_AT];
        let mut source = Pieces {
            data: text,
            sizes: vec![],
        };
        let mut sources: [(i64, &mut dyn TextSource); 1] = [(0, &mut source)];
        let mut largest = 0;
        let mut total = 0;
        write_streamed(&json!(placeholder(7, 0)), 7, &mut sources, &mut |piece| {
            largest = largest.max(piece.len());
            total += piece.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(total, 5 * FLUSH_AT + 2);
        assert!(largest < FLUSH_AT + READ_SIZE as usize * 6, "{largest}");
    }

    #[test]
    fn a_failing_source_is_reported() {
        struct Broken;
        impl TextSource for Broken {
            fn read(&mut self, _: u64) -> Result<Option<Vec<u8>>, String> {
                Err("disk on fire".into())
            }
        }
        let mut broken = Broken;
        let mut sources: [(i64, &mut dyn TextSource); 1] = [(0, &mut broken)];
        let result = write_streamed(&json!(placeholder(7, 0)), 7, &mut sources, &mut |_| Ok(()));
        assert_eq!(result, Err(BodyError::Source("disk on fire".into())));
    }
}
