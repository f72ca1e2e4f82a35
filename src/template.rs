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

/// Renders `source` with `build` = `payload` and parses the output as JSON.
pub fn render(source: &str, payload: &Value) -> Result<Value, FormatFailure> {
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
    let text = template.render(context).map_err(|e| {
        failure(
            format!("template failed to render: {e}"),
            e.line().unwrap_or(0),
            0,
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
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
    })
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
        render(source, &payload).map(|v| String::from_utf8(crate::encoder::to_vec(&v)).unwrap())
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
    fn big_integers_stay_integers() {
        let out = render_str(
            "[{{ build.big }}]",
            json!({"big": 1180591620717411303424_u128}),
        )
        .unwrap();
        assert_eq!(out, "[1180591620717411303424]");
    }
}
