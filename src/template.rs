//! `format_fn` as a Jinja template (minijinja), rendered with `build` = the default
//! payload. Its output must be JSON; it is re-encoded like the default payload.
//! Pure: no I/O.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::FormatFailure;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Like Jinja's default: a missing attribute renders as nothing rather than failing.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env
}

/// Checks that `source` parses; the message says where it does not.
pub fn check(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("the template does not parse: {e}"))
}

/// Renders `source` with `build` = `payload` and parses the output as JSON. Rendering
/// stops once the output passes `max_bytes`, so a runaway template cannot exhaust memory.
pub fn render(source: &str, payload: &Value, max_bytes: u64) -> Result<Value, FormatFailure> {
    let env = environment();
    let failure = |message: String, line: usize, column: usize| FormatFailure {
        message,
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    };
    let template = env.template_from_str(source).map_err(|e| {
        failure(
            format!("template does not parse: {e}"),
            e.line().unwrap_or(0),
            0,
        )
    })?;
    let context = minijinja::context! { build => to_template_value(payload) };
    let mut output = Bounded {
        text: Vec::new(),
        max_bytes,
    };
    template
        .render_captured_to(context, &mut output)
        .map_err(|e| {
            let message = if output.text.len() as u64 > max_bytes {
                format!("the output is over maxBodyBytes ({max_bytes} bytes)")
            } else {
                format!("template failed to render: {e}")
            };
            failure(message, e.line().unwrap_or(0), 0)
        })?;
    // minijinja writes only whole UTF-8 strings, so this is the identity in practice.
    let text = String::from_utf8_lossy(&output.text);
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        let excerpt: String = text
            .lines()
            .nth(e.line().saturating_sub(1))
            .unwrap_or_default()
            .chars()
            .skip(e.column().saturating_sub(1))
            .take(40)
            .collect();
        failure(
            format!("the template's output is not JSON: {e}; it reads {excerpt:?} there"),
            e.line(),
            e.column(),
        )
    })?;
    match crate::encoder::non_finite(&value) {
        Some(number) => Err(failure(
            format!(
                "the output has {number}, out of a double's range; it would be sent as Infinity, which JSON parsers refuse"
            ),
            0,
            0,
        )),
        None => Ok(value),
    }
}

/// The template's output, refusing to grow past `max_bytes`.
struct Bounded {
    text: Vec<u8>,
    max_bytes: u64,
}

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        if self.text.len() as u64 > self.max_bytes {
            return Err(std::io::Error::other("over maxBodyBytes"));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The payload as a template value: objects keep their key order, integers of any size
/// that fit in 128 bits stay integers.
fn to_template_value(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            let text = n.as_str();
            if let Ok(i) = text.parse::<i64>() {
                minijinja::Value::from(i)
            } else if let Ok(i) = text.parse::<i128>() {
                minijinja::Value::from(i)
            } else {
                minijinja::Value::from(text.parse::<f64>().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_template_value).collect(),
        Value::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (minijinja::Value::from(k.as_str()), to_template_value(v)))
                .collect::<indexmap::IndexMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_str(source: &str, payload: Value) -> Result<String, FormatFailure> {
        render(source, &payload, 1 << 20)
            .map(|v| String::from_utf8(crate::encoder::to_vec(&v)).unwrap())
    }

    #[test]
    fn renders_with_filters_and_reencodes_python_style() {
        let out = render_str(
            r#"{"name": {{ build.builder.name | tojson }}, "n": {{ build.number }}, "up": {{ build.builder.name | upper | tojson }}, "keys": {{ build.builder | list | tojson }}}"#,
            json!({"number": 3, "builder": {"name": "Grüße", "tags": []}}),
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"name": "Gr\u00fc\u00dfe", "n": 3, "up": "GR\u00dcSSE", "keys": ["name", "tags"]}"#
        );
    }

    #[test]
    fn output_that_is_not_json_quotes_the_position() {
        let err =
            render_str("{\"a\": 1,\n \"b\": {{ build.x }} }", json!({"x": "word"})).unwrap_err();
        assert_eq!((err.line, err.column), (2, 7));
        assert!(
            err.message.contains("not JSON") && err.message.contains("word"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused() {
        let message = check("{% if build.results %}").unwrap_err();
        assert!(message.contains("does not parse"), "{message}");
        assert!(check("{{ build | tojson }}").is_ok());
    }

    #[test]
    fn runaway_output_stops_at_the_limit() {
        let err = render(
            "[{% for i in range(100000) %}\"{{ 'x' * 100 }}\", {% endfor %}0]",
            &json!({}),
            64 * 1024,
        )
        .unwrap_err();
        assert!(err.message.contains("maxBodyBytes"), "{}", err.message);
    }

    #[test]
    fn numbers_out_of_double_range_are_refused() {
        let err = render_str("{\"x\": 1e400}", json!({})).unwrap_err();
        assert!(
            err.message.contains("out of a double's range"),
            "{}",
            err.message
        );
        assert!(render_str("{\"x\": 1e300}", json!({})).is_ok());
    }

    #[test]
    fn big_integers_stay_integers() {
        let out = render_str(
            "[{{ build.big }}]",
            json!({"big": 1180591620717411303424_u128}),
        )
        .unwrap();
        assert_eq!(out, "[1180591620717411303424]");
    }
}
