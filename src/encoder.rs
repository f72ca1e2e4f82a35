//! JSON text exactly as Python's `json.dumps(obj)` writes it with default arguments,
//! which is what Buildbot's `HttpStatusPush` sends: `", "` and `": "` separators, keys in
//! insertion order, every non-ASCII character escaped (`\uXXXX`, surrogate pairs above
//! U+FFFF), integers of any size verbatim and floats as Python's `repr`.

use serde_json::{Number, Value};

/// Writes `value` to `out` in Python's `json.dumps` encoding.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    write_value_spliced(out, value, &mut |_, _| false);
}

/// Like [`write_value`], but every string is first offered to `splice`, which may write
/// it (quotes included) itself and return `true`; `out` is then written on from there.
pub fn write_value_spliced(
    out: &mut Vec<u8>,
    value: &Value,
    splice: &mut dyn FnMut(&str, &mut Vec<u8>) -> bool,
) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => {
            if !splice(s, out) {
                write_str(out, s)
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_value_spliced(out, item, splice);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_str(out, key);
                out.extend_from_slice(b": ");
                write_value_spliced(out, item, splice);
            }
            out.push(b'}');
        }
    }
}

/// The first number in `value` that Python would read as a float out of a double's range
/// (`1e400`), which `json.dumps` writes as `Infinity`, a token strict JSON parsers refuse.
/// status-push refuses such a payload instead of sending it (docs/payload.md).
pub fn non_finite(value: &Value) -> Option<&str> {
    match value {
        Value::Number(n) => {
            let text = n.as_str();
            let is_float = !text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            (is_float && !text.parse::<f64>().is_ok_and(f64::is_finite)).then_some(text)
        }
        Value::Array(items) => items.iter().find_map(non_finite),
        Value::Object(map) => map.values().find_map(non_finite),
        _ => None,
    }
}

/// Encodes `value` to a new buffer.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

/// Writes a JSON string literal with Python's `ensure_ascii=True` escaping.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_str_content(out, s);
    out.push(b'"');
}

/// Writes the escaped characters of a string literal, without the quotes. Escaping is
/// per character, so a long text can be written in pieces split at character boundaries.
pub fn write_str_content(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let push_u = |out: &mut Vec<u8>, unit: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((unit >> shift) & 0xf)]);
        }
    };
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    let mut i = 0;
    // Bytes, not chars: almost every byte is printable ASCII, which needs no decoding.
    while i < bytes.len() {
        let b = bytes[i];
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        // `i` is always on a character boundary: it only moves by whole characters.
        let Some(c) = s.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        let escape: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            _ => None,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        i += c.len_utf8();
        plain_from = i;
        match escape {
            Some(seq) => out.extend_from_slice(seq),
            None => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_u(out, *unit);
                }
            }
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

/// Writes a number as Python would after `json.loads`: an integer literal stays an exact
/// `int`, anything with a fraction or exponent becomes a `float` printed by `repr`.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    let text = n.as_str();
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        // Python's int has no negative zero.
        out.extend_from_slice(if text == "-0" { b"0" } else { text.as_bytes() });
    } else {
        // JSON number syntax is a subset of Rust's float syntax, so this cannot fail for a
        // parsed `Number`; NaN stands in for the impossible case rather than a panic.
        let x = text.parse::<f64>().unwrap_or(f64::NAN);
        out.extend_from_slice(float_repr(x).as_bytes());
    }
}

/// Python's `float.__repr__` as `json.dumps` uses it (`Infinity` and `NaN` included):
/// the shortest digits that round-trip, in positional notation when the decimal exponent
/// is in `-4..16`, else as `d.ddde±XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Position of the decimal point relative to the digits: value = 0.DIGITS × 10^point.
    let point = exp + 1;
    let mut s = String::from(sign);
    if (-3..=16).contains(&point) {
        let n = digits.len() as i32;
        if point <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-point) as usize));
            s.push_str(&digits);
        } else if point < n {
            s.push_str(&digits[..point as usize]);
            s.push('.');
            s.push_str(&digits[point as usize..]);
        } else {
            s.push_str(&digits);
            s.extend(std::iter::repeat_n('0', (point - n) as usize));
            s.push_str(".0");
        }
    } else {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if exp < 0 { '-' } else { '+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            s.push('0');
        }
        s.push_str(&magnitude.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: &str) -> String {
        let value: Value = serde_json::from_str(json).expect("test input is JSON");
        String::from_utf8(to_vec(&value)).expect("encoder writes ASCII")
    }

    // Every expectation below is what CPython 3.11's `json.dumps(json.loads(input))` prints.
    #[test]
    fn floats_match_python_repr() {
        let cases = [
            ("1e16", "1e+16"),
            ("1e-7", "1e-07"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("-0.0", "-0.0"),
            ("1.5", "1.5"),
            ("1.0", "1.0"),
            ("100.0", "100.0"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678", "123456789012345678"),
            ("1.5e16", "1.5e+16"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("0.000123", "0.000123"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("2.5E3", "2500.0"),
            ("0.1", "0.1"),
            ("123.456", "123.456"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("1e100", "1e+100"),
            ("-1.25e-10", "-1.25e-10"),
        ];
        for (input, python) in cases {
            assert_eq!(dumps(input), python, "json.dumps(json.loads({input:?}))");
        }
    }

    #[test]
    fn sum_of_tenths_is_shortest_repr() {
        assert_eq!(float_repr(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn numbers_out_of_double_range_are_found() {
        let value: Value =
            serde_json::from_str(r#"{"a": [1, 2.5, {"b": -1e400}], "c": 1e400}"#).unwrap();
        // serde_json keeps the number's text, with the exponent's sign made explicit.
        assert_eq!(non_finite(&value), Some("-1e+400"));
        let fine: Value =
            serde_json::from_str(r#"[123456789012345678901234567890, 1e308, -0.0]"#).unwrap();
        assert_eq!(non_finite(&fine), None);
    }

    #[test]
    fn integers_of_any_size_are_exact() {
        assert_eq!(dumps("1180591620717411303424"), "1180591620717411303424"); // 2**70
        assert_eq!(dumps("-1180591620717411303424"), "-1180591620717411303424");
        assert_eq!(dumps("-0"), "0");
        assert_eq!(dumps("0"), "0");
        assert_eq!(dumps("-17"), "-17");
    }

    #[test]
    fn strings_escape_like_ensure_ascii() {
        let cases = [
            (r#""plain""#, r#""plain""#),
            ("\"\\u2028\"", r#""\u2028""#),
            ("\"\u{1F600}\"", r#""\ud83d\ude00""#),
            ("\"\\u0000\"", r#""\u0000""#),
            ("\"\\u001f\\u007f\"", r#""\u001f\u007f""#),
            (
                "\"tab\\tnl\\ncr\\rbs\\bff\\f\"",
                r#""tab\tnl\ncr\rbs\bff\f""#,
            ),
            ("\"q\\\" b\\\\ s/\"", r#""q\" b\\ s/""#),
            ("\"Grüße 日本\"", r#""Gr\u00fc\u00dfe \u65e5\u672c""#),
            (
                "\"\u{80}\u{ffff}\u{10000}\u{10ffff}\"",
                r#""\u0080\uffff\ud800\udc00\udbff\udfff""#,
            ),
        ];
        for (input, python) in cases {
            assert_eq!(dumps(input), python, "json.dumps(json.loads({input:?}))");
        }
    }

    #[test]
    fn containers_use_python_separators_and_keep_key_order() {
        assert_eq!(
            dumps(r#"{"z": 1, "a": [1, 2.5, null, true, false, {}], "m": {"k": []}}"#),
            r#"{"z": 1, "a": [1, 2.5, null, true, false, {}], "m": {"k": []}}"#
        );
        assert_eq!(dumps("[]"), "[]");
        assert_eq!(dumps(r#"{"é": "x"}"#), r#"{"\u00e9": "x"}"#);
    }

    #[test]
    fn string_pieces_concatenate_to_the_whole() {
        let text = "ab\u{e9}\n\u{1F680}z";
        let mut whole = Vec::new();
        write_str_content(&mut whole, text);
        let mut pieces = Vec::new();
        for piece in ["ab", "\u{e9}\n", "\u{1F680}", "z"] {
            write_str_content(&mut pieces, piece);
        }
        assert_eq!(whole, pieces);
    }
}
