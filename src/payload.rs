//! Buildbot's default `HttpStatusPush` payload from a build event: the build's fields in
//! data-API order, then `properties`, `buildrequest`, `buildset`, `parentbuild`,
//! `parentbuilder`, `builder`, `url`, `steps` and `prev_build` as the options ask.
//! Pure: no I/O.

use serde_json::{Map, Value};

use crate::body::placeholder;
use crate::config::{PayloadOptions, Settings};
use crate::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, EventKind, InputError, Log, LogContent,
    Property, PushError, Sourcestamp, Step,
};

/// The payload for `event`: the default payload, or the `format_fn` template's output.
/// A streamed log text stands as `body::placeholder(nonce, logid)`.
pub fn render(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
    nonce: u64,
) -> Result<Value, PushError> {
    let payload = build(&settings.payload, kind, event, nonce)?;
    match &settings.template {
        Some(source) => crate::template::render(source, &payload, settings.max_body_bytes)
            .map_err(PushError::Format),
        None => Ok(payload),
    }
}

/// The default payload as a JSON value.
pub fn build(
    opts: &PayloadOptions,
    kind: EventKind,
    event: &BuildEvent,
    nonce: u64,
) -> Result<Value, PushError> {
    let mut doc = Map::new();
    build_fields(&mut doc, &event.build);
    let properties = if opts.want_properties {
        properties(&event.properties)?
    } else {
        Value::Object(Map::new())
    };
    doc.insert("properties".into(), properties);
    doc.insert("buildrequest".into(), buildrequest(&event.buildrequest)?);
    doc.insert("buildset".into(), buildset(&event.buildset));
    doc.insert(
        "parentbuild".into(),
        optional(event.parentbuild.as_ref(), build_doc)?,
    );
    doc.insert(
        "parentbuilder".into(),
        optional(event.parentbuilder.as_ref(), |b| Ok(builder(b)))?,
    );
    doc.insert("builder".into(), builder(&event.builder));
    doc.insert(
        "url".into(),
        Value::String(format!(
            "{}#/builders/{}/builds/{}",
            opts.buildbot_url, event.build.builderid, event.build.number
        )),
    );
    if opts.want_steps {
        let steps = event
            .steps
            .iter()
            .map(|s| step(opts, &event.build, s, nonce))
            .collect();
        doc.insert("steps".into(), Value::Array(steps));
    }
    if opts.want_previous_build && kind == EventKind::Finished {
        doc.insert(
            "prev_build".into(),
            optional(event.prev_build.as_ref(), build_doc)?,
        );
    }
    Ok(Value::Object(doc))
}

fn optional<T>(
    value: Option<&T>,
    f: impl Fn(&T) -> Result<Value, PushError>,
) -> Result<Value, PushError> {
    value.map_or(Ok(Value::Null), f)
}

fn int(n: i64) -> Value {
    Value::from(n)
}

fn opt_int(n: Option<i64>) -> Value {
    n.map_or(Value::Null, Value::from)
}

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn opt_string(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, string)
}

fn build_fields(doc: &mut Map<String, Value>, b: &Build) {
    doc.insert("buildid".into(), int(b.buildid));
    doc.insert("number".into(), int(b.number));
    doc.insert("builderid".into(), int(b.builderid));
    doc.insert("buildrequestid".into(), int(b.buildrequestid));
    doc.insert("workerid".into(), int(b.workerid));
    doc.insert("masterid".into(), int(b.masterid));
    doc.insert("started_at".into(), int(b.started_at));
    doc.insert("complete_at".into(), opt_int(b.complete_at));
    doc.insert("locks_duration_s".into(), int(b.locks_duration_s));
    doc.insert("complete".into(), Value::Bool(b.complete));
    doc.insert("state_string".into(), string(&b.state_string));
    doc.insert("results".into(), opt_int(b.results));
}

/// A build document other than the event's own (parent, previous), with the properties
/// the data API attached to it, if any.
fn build_doc(b: &Build) -> Result<Value, PushError> {
    let mut doc = Map::new();
    build_fields(&mut doc, b);
    if let Some(props) = &b.properties {
        doc.insert("properties".into(), properties(props)?);
    }
    Ok(Value::Object(doc))
}

/// Buildbot's `{name: [value, source]}`.
pub fn properties(props: &[Property]) -> Result<Value, PushError> {
    let mut map = Map::new();
    for p in props {
        let invalid = |message: String| {
            PushError::InvalidInput(InputError {
                key: format!("properties.{}", p.name),
                message,
            })
        };
        let value: Value = serde_json::from_str(&p.value)
            .map_err(|e| invalid(format!("the property value is not JSON text: {e}")))?;
        if let Some(number) = crate::encoder::non_finite(&value) {
            return Err(invalid(format!(
                "{number} is out of a double's range; Buildbot would send it as Infinity, which JSON parsers refuse"
            )));
        }
        map.insert(p.name.clone(), Value::Array(vec![value, string(&p.source)]));
    }
    Ok(Value::Object(map))
}

fn optional_properties(props: &Option<Vec<Property>>) -> Result<Value, PushError> {
    props.as_deref().map_or(Ok(Value::Null), properties)
}

fn buildrequest(r: &Buildrequest) -> Result<Value, PushError> {
    let mut doc = Map::new();
    doc.insert("buildrequestid".into(), int(r.buildrequestid));
    doc.insert("buildsetid".into(), int(r.buildsetid));
    doc.insert("builderid".into(), int(r.builderid));
    doc.insert("priority".into(), int(r.priority));
    doc.insert("claimed".into(), Value::Bool(r.claimed));
    doc.insert("claimed_at".into(), opt_int(r.claimed_at));
    doc.insert("claimed_by_masterid".into(), opt_int(r.claimed_by_masterid));
    doc.insert("complete".into(), Value::Bool(r.complete));
    doc.insert("results".into(), opt_int(r.results));
    doc.insert("submitted_at".into(), int(r.submitted_at));
    doc.insert("complete_at".into(), opt_int(r.complete_at));
    doc.insert("waited_for".into(), Value::Bool(r.waited_for));
    doc.insert("properties".into(), optional_properties(&r.properties)?);
    Ok(Value::Object(doc))
}

fn buildset(s: &Buildset) -> Value {
    let mut doc = Map::new();
    doc.insert("bsid".into(), int(s.bsid));
    doc.insert("external_idstring".into(), opt_string(&s.external_idstring));
    doc.insert("reason".into(), string(&s.reason));
    doc.insert("submitted_at".into(), int(s.submitted_at));
    doc.insert("complete".into(), Value::Bool(s.complete));
    doc.insert("complete_at".into(), opt_int(s.complete_at));
    doc.insert("results".into(), opt_int(s.results));
    doc.insert("parent_buildid".into(), opt_int(s.parent_buildid));
    doc.insert(
        "parent_relationship".into(),
        opt_string(&s.parent_relationship),
    );
    doc.insert("rebuilt_buildid".into(), opt_int(s.rebuilt_buildid));
    doc.insert(
        "sourcestamps".into(),
        Value::Array(s.sourcestamps.iter().map(sourcestamp).collect()),
    );
    Value::Object(doc)
}

fn sourcestamp(ss: &Sourcestamp) -> Value {
    let mut doc = Map::new();
    doc.insert("ssid".into(), int(ss.ssid));
    doc.insert("branch".into(), opt_string(&ss.branch));
    doc.insert("revision".into(), opt_string(&ss.revision));
    doc.insert("project".into(), string(&ss.project));
    doc.insert("repository".into(), string(&ss.repository));
    doc.insert("codebase".into(), string(&ss.codebase));
    doc.insert("created_at".into(), int(ss.created_at));
    let patch = ss.patch.as_ref().map_or(Value::Null, |p| {
        let mut doc = Map::new();
        doc.insert("patchid".into(), int(p.patchid));
        doc.insert("level".into(), int(p.level));
        doc.insert("subdir".into(), opt_string(&p.subdir));
        doc.insert("author".into(), opt_string(&p.author));
        doc.insert("comment".into(), opt_string(&p.comment));
        doc.insert("body".into(), opt_string(&p.body));
        Value::Object(doc)
    });
    doc.insert("patch".into(), patch);
    Value::Object(doc)
}

fn builder(b: &Builder) -> Value {
    let mut doc = Map::new();
    doc.insert("builderid".into(), int(b.builderid));
    doc.insert("name".into(), string(&b.name));
    doc.insert(
        "masterids".into(),
        Value::Array(b.masterids.iter().copied().map(int).collect()),
    );
    doc.insert("description".into(), opt_string(&b.description));
    doc.insert(
        "description_format".into(),
        opt_string(&b.description_format),
    );
    doc.insert("description_html".into(), opt_string(&b.description_html));
    doc.insert("projectid".into(), opt_int(b.projectid));
    doc.insert(
        "tags".into(),
        Value::Array(b.tags.iter().map(|t| string(t)).collect()),
    );
    Value::Object(doc)
}

fn step(opts: &PayloadOptions, build: &Build, s: &Step, nonce: u64) -> Value {
    let mut doc = Map::new();
    doc.insert("stepid".into(), int(s.stepid));
    doc.insert("number".into(), int(s.number));
    doc.insert("name".into(), string(&s.name));
    doc.insert("buildid".into(), int(s.buildid));
    doc.insert("started_at".into(), opt_int(s.started_at));
    doc.insert("locks_acquired_at".into(), opt_int(s.locks_acquired_at));
    doc.insert("complete".into(), Value::Bool(s.complete));
    doc.insert("complete_at".into(), opt_int(s.complete_at));
    doc.insert("state_string".into(), string(&s.state_string));
    doc.insert("results".into(), opt_int(s.results));
    let urls = s
        .urls
        .iter()
        .map(|u| {
            let mut doc = Map::new();
            doc.insert("name".into(), string(&u.name));
            doc.insert("url".into(), string(&u.url));
            Value::Object(doc)
        })
        .collect();
    doc.insert("urls".into(), Value::Array(urls));
    doc.insert("hidden".into(), Value::Bool(s.hidden));
    if opts.want_logs {
        let logs = s
            .logs
            .iter()
            .map(|l| log(opts, build, s, l, nonce))
            .collect();
        doc.insert("logs".into(), Value::Array(logs));
    }
    Value::Object(doc)
}

fn log(opts: &PayloadOptions, build: &Build, s: &Step, l: &Log, nonce: u64) -> Value {
    let base = &opts.buildbot_url;
    let mut doc = Map::new();
    doc.insert("logid".into(), int(l.logid));
    doc.insert("name".into(), string(&l.name));
    doc.insert("slug".into(), string(&l.slug));
    doc.insert("stepid".into(), int(l.stepid));
    doc.insert("complete".into(), Value::Bool(l.complete));
    doc.insert("num_lines".into(), int(l.num_lines));
    doc.insert("type".into(), string(&l.type_));
    doc.insert("stepname".into(), string(&s.name));
    doc.insert(
        "url".into(),
        Value::String(format!(
            "{base}#/builders/{}/builds/{}/steps/{}/logs/{}",
            build.builderid, build.number, s.number, l.slug
        )),
    );
    doc.insert(
        "url_raw".into(),
        Value::String(format!("{base}api/v2/logs/{}/raw", l.logid)),
    );
    doc.insert(
        "url_raw_inline".into(),
        Value::String(format!("{base}api/v2/logs/{}/raw_inline", l.logid)),
    );
    let text = match &l.content {
        Some(LogContent::Text(text)) => Some(string(text)),
        Some(LogContent::Stream(_)) => Some(Value::String(placeholder(nonce, l.logid))),
        None => None,
    };
    if let Some(text) = text {
        let mut content = Map::new();
        content.insert("logid".into(), int(l.logid));
        content.insert("firstline".into(), int(0));
        content.insert("content".into(), text);
        doc.insert("content".into(), Value::Object(content));
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::documents;
    use std::path::Path;

    fn fixture(case: &str, file: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/buildbot")
            .join(case)
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    fn settings(case: &str) -> Settings {
        let config =
            documents::config_from_json(&fixture(case, "config.json")).expect("fixture config");
        Settings::from_config(config).expect("fixture config is valid")
    }

    /// The body Buildbot sent, for a case whose events each made exactly one request.
    fn expected_body(case: &str, event: &str) -> String {
        let expected = fixture(case, "expected.json");
        expected[event][0]["body"]
            .as_str()
            .expect("one request with a body")
            .to_string()
    }

    fn rendered(case: &str, event: &str, kind: EventKind) -> String {
        let doc = fixture(case, &format!("{event}.json"));
        let event = documents::event_from_json(&doc).expect("fixture event");
        let payload = render(&settings(case), kind, &event, 1).expect("renders");
        String::from_utf8(crate::encoder::to_vec(&payload)).unwrap()
    }

    #[test]
    fn golden_bodies_match_buildbot_byte_for_byte() {
        for case in [
            "default_start_finish",
            "basic_auth",
            "custom_headers",
            "skip_encoding",
            "want_steps",
            "want_steps_logs_content",
            "want_previous_build",
            "format_fn_custom",
        ] {
            for (event, kind) in [
                ("started", EventKind::Started),
                ("finished", EventKind::Finished),
            ] {
                let got = rendered(case, event, kind);
                let want = expected_body(case, event);
                assert!(
                    got == want,
                    "{case}/{event}: body differs from Buildbot's\n got: {}\nwant: {}",
                    &got[..got.len().min(600)],
                    &want[..want.len().min(600)]
                );
            }
        }
    }

    #[test]
    fn without_want_properties_properties_is_empty_and_no_steps_key() {
        let doc = fixture("want_steps", "finished.json");
        let event = documents::event_from_json(&doc).unwrap();
        let opts = PayloadOptions {
            buildbot_url: "http://bb/".into(),
            want_properties: false,
            want_steps: false,
            want_logs: false,
            want_previous_build: true,
        };
        let started = build(&opts, EventKind::Started, &event, 1).unwrap();
        assert_eq!(started["properties"], serde_json::json!({}));
        assert!(started.get("steps").is_none());
        assert!(
            started.get("prev_build").is_none(),
            "prev_build is for finished events only"
        );
        let finished = build(&opts, EventKind::Finished, &event, 1).unwrap();
        assert_eq!(
            finished["prev_build"],
            Value::Null,
            "no previous build gives null"
        );
        assert_eq!(finished["url"], "http://bb/#/builders/79/builds/0");
    }

    #[test]
    fn property_values_keep_big_integers_and_float_repr() {
        let props = vec![Property {
            name: "p".into(),
            value: "[1180591620717411303424, 1e16, 0.5, \"\u{1F600}\"]".into(),
            source: "Test".into(),
        }];
        let text = crate::encoder::to_vec(&properties(&props).unwrap());
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"p": [[1180591620717411303424, 1e+16, 0.5, "\ud83d\ude00"], "Test"]}"#
        );
    }

    #[test]
    fn a_property_that_is_not_json_is_a_typed_error() {
        let props = vec![Property {
            name: "broken".into(),
            value: "{nope".into(),
            source: "Test".into(),
        }];
        match properties(&props) {
            Err(PushError::InvalidInput(e)) => assert_eq!(e.key, "properties.broken"),
            other => panic!("expected a typed error, got {other:?}"),
        }
    }
}
