//! Buildbot's default `HttpStatusPush` payload from a build event: the build's fields in
//! data-API order, then `properties`, `buildrequest`, `buildset`, `parentbuild`,
//! `parentbuilder`, `builder`, `url`, `steps` and `prev_build` as the options ask.
//! Written straight from the WIT records into Python's `json.dumps` bytes
//! ([`crate::encoder`]'s rules): no JSON tree is built, so no string is allocated per key
//! or number. The tree ([`build`]) is made from those bytes only where one is needed: for
//! `format_fn`, and for bodies whose streamed log texts are spliced in as they are read.
//! Pure: no I/O.

use indexmap::IndexMap;
use serde_json::Value;

use crate::body::placeholder;
use crate::config::{PayloadOptions, Settings};
use crate::encoder::{write_str, write_value};
use crate::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, EventKind, InputError, Log, LogContent,
    Property, PushError, Sourcestamp, Step,
};

/// A key as written in an object, quotes and `": "` included: `key!("url")` is
/// `"\"url\": "`, so a key costs one append.
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\": ")
    };
}

/// The payload for `event` as a JSON value: the default payload, or the `format_fn`
/// template's output. A streamed log text stands as `body::placeholder(nonce, logid)`.
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

/// The request body for `event`: the default payload encoded directly, or the
/// `format_fn` template's output encoded.
pub fn render_body(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
    nonce: u64,
) -> Result<Vec<u8>, PushError> {
    if settings.template.is_some() {
        return render(settings, kind, event, nonce).map(|value| crate::encoder::to_vec(&value));
    }
    let mut out = Vec::with_capacity(2048);
    encode(&settings.payload, kind, event, nonce, &mut out)?;
    Ok(out)
}

/// The default payload as a JSON value (the bytes of [`encode`], parsed).
pub fn build(
    opts: &PayloadOptions,
    kind: EventKind,
    event: &BuildEvent,
    nonce: u64,
) -> Result<Value, PushError> {
    let mut out = Vec::with_capacity(2048);
    encode(opts, kind, event, nonce, &mut out)?;
    // The encoder writes only valid JSON; an error here would be a bug, reported as one.
    serde_json::from_slice(&out)
        .map_err(|e| PushError::Protocol(format!("the payload did not re-parse: {e}")))
}

/// Appends the default payload to `out`, encoded as Buildbot sends it.
pub fn encode(
    opts: &PayloadOptions,
    kind: EventKind,
    event: &BuildEvent,
    nonce: u64,
    out: &mut Vec<u8>,
) -> Result<(), PushError> {
    let mut doc = Object::open(out);
    build_fields(&mut doc, &event.build);
    let out = doc.key(key!("properties"));
    if opts.want_properties {
        properties(out, &event.properties)?;
    } else {
        out.extend_from_slice(b"{}");
    }
    buildrequest(doc.key(key!("buildrequest")), &event.buildrequest)?;
    buildset(doc.key(key!("buildset")), &event.buildset);
    let out = doc.key(key!("parentbuild"));
    match &event.parentbuild {
        Some(b) => build_doc(out, b)?,
        None => null(out),
    }
    let out = doc.key(key!("parentbuilder"));
    match &event.parentbuilder {
        Some(b) => builder(out, b),
        None => null(out),
    }
    builder(doc.key(key!("builder")), &event.builder);
    let out = doc.key(key!("url"));
    out.push(b'"');
    crate::encoder::write_str_content(out, &opts.buildbot_url);
    out.extend_from_slice(b"#/builders/");
    int(out, event.build.builderid);
    out.extend_from_slice(b"/builds/");
    int(out, event.build.number);
    out.push(b'"');
    if opts.want_steps {
        let out = doc.key(key!("steps"));
        list(out, &event.steps, |out, s| {
            step(out, opts, &event.build, s, nonce)
        });
    }
    if opts.want_previous_build && kind == EventKind::Finished {
        let out = doc.key(key!("prev_build"));
        match &event.prev_build {
            Some(b) => build_doc(out, b)?,
            None => null(out),
        }
    }
    doc.close();
    Ok(())
}

/// A JSON object being written; keys come from `key!`.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes the separator and the key (from `key!`), and returns the buffer for the
    /// value.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
            self.out.push(b' ');
        }
        self.empty = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out
    }

    fn int(&mut self, key: &str, n: i64) {
        int(self.key(key), n);
    }

    fn opt_int(&mut self, key: &str, n: Option<i64>) {
        let out = self.key(key);
        match n {
            Some(n) => int(out, n),
            None => null(out),
        }
    }

    fn bool(&mut self, key: &str, b: bool) {
        let out = self.key(key);
        out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    fn str(&mut self, key: &str, s: &str) {
        write_str(self.key(key), s);
    }

    fn opt_str(&mut self, key: &str, s: &Option<String>) {
        let out = self.key(key);
        match s {
            Some(s) => write_str(out, s),
            None => null(out),
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// An integer in decimal, as Python's `int` prints it.
fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn list<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        item(out, it);
    }
    out.push(b']');
}

fn build_fields(doc: &mut Object<'_>, b: &Build) {
    doc.int(key!("buildid"), b.buildid);
    doc.int(key!("number"), b.number);
    doc.int(key!("builderid"), b.builderid);
    doc.int(key!("buildrequestid"), b.buildrequestid);
    doc.int(key!("workerid"), b.workerid);
    doc.int(key!("masterid"), b.masterid);
    doc.int(key!("started_at"), b.started_at);
    doc.opt_int(key!("complete_at"), b.complete_at);
    doc.int(key!("locks_duration_s"), b.locks_duration_s);
    doc.bool(key!("complete"), b.complete);
    doc.str(key!("state_string"), &b.state_string);
    doc.opt_int(key!("results"), b.results);
}

/// A build document other than the event's own (parent, previous), with the properties
/// the data API attached to it, if any.
fn build_doc(out: &mut Vec<u8>, b: &Build) -> Result<(), PushError> {
    let mut doc = Object::open(out);
    build_fields(&mut doc, b);
    if let Some(props) = &b.properties {
        properties(doc.key(key!("properties")), props)?;
    }
    doc.close();
    Ok(())
}

/// Buildbot's `{name: [value, source]}`. Like the dict Buildbot builds it from, a name
/// given twice keeps its first place and its last value. A value that is not JSON, or a
/// number out of a double's range, is refused (every value is checked, in order).
pub fn properties(out: &mut Vec<u8>, props: &[Property]) -> Result<(), PushError> {
    let mut map: IndexMap<&str, (Value, &str)> = IndexMap::with_capacity(props.len());
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
        map.insert(&p.name, (value, &p.source));
    }
    out.push(b'{');
    for (i, (name, (value, source))) in map.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_str(out, name);
        out.extend_from_slice(b": [");
        write_value(out, value);
        out.extend_from_slice(b", ");
        write_str(out, source);
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
}

fn buildrequest(out: &mut Vec<u8>, r: &Buildrequest) -> Result<(), PushError> {
    let mut doc = Object::open(out);
    doc.int(key!("buildrequestid"), r.buildrequestid);
    doc.int(key!("buildsetid"), r.buildsetid);
    doc.int(key!("builderid"), r.builderid);
    doc.int(key!("priority"), r.priority);
    doc.bool(key!("claimed"), r.claimed);
    doc.opt_int(key!("claimed_at"), r.claimed_at);
    doc.opt_int(key!("claimed_by_masterid"), r.claimed_by_masterid);
    doc.bool(key!("complete"), r.complete);
    doc.opt_int(key!("results"), r.results);
    doc.int(key!("submitted_at"), r.submitted_at);
    doc.opt_int(key!("complete_at"), r.complete_at);
    doc.bool(key!("waited_for"), r.waited_for);
    let out = doc.key(key!("properties"));
    match &r.properties {
        Some(props) => properties(out, props)?,
        None => null(out),
    }
    doc.close();
    Ok(())
}

fn buildset(out: &mut Vec<u8>, s: &Buildset) {
    let mut doc = Object::open(out);
    doc.int(key!("bsid"), s.bsid);
    doc.opt_str(key!("external_idstring"), &s.external_idstring);
    doc.str(key!("reason"), &s.reason);
    doc.int(key!("submitted_at"), s.submitted_at);
    doc.bool(key!("complete"), s.complete);
    doc.opt_int(key!("complete_at"), s.complete_at);
    doc.opt_int(key!("results"), s.results);
    doc.opt_int(key!("parent_buildid"), s.parent_buildid);
    doc.opt_str(key!("parent_relationship"), &s.parent_relationship);
    doc.opt_int(key!("rebuilt_buildid"), s.rebuilt_buildid);
    list(doc.key(key!("sourcestamps")), &s.sourcestamps, sourcestamp);
    doc.close();
}

fn sourcestamp(out: &mut Vec<u8>, ss: &Sourcestamp) {
    let mut doc = Object::open(out);
    doc.int(key!("ssid"), ss.ssid);
    doc.opt_str(key!("branch"), &ss.branch);
    doc.opt_str(key!("revision"), &ss.revision);
    doc.str(key!("project"), &ss.project);
    doc.str(key!("repository"), &ss.repository);
    doc.str(key!("codebase"), &ss.codebase);
    doc.int(key!("created_at"), ss.created_at);
    let out = doc.key(key!("patch"));
    match &ss.patch {
        Some(p) => {
            let mut patch = Object::open(out);
            patch.int(key!("patchid"), p.patchid);
            patch.int(key!("level"), p.level);
            patch.opt_str(key!("subdir"), &p.subdir);
            patch.opt_str(key!("author"), &p.author);
            patch.opt_str(key!("comment"), &p.comment);
            patch.opt_str(key!("body"), &p.body);
            patch.close();
        }
        None => null(out),
    }
    doc.close();
}

fn builder(out: &mut Vec<u8>, b: &Builder) {
    let mut doc = Object::open(out);
    doc.int(key!("builderid"), b.builderid);
    doc.str(key!("name"), &b.name);
    list(doc.key(key!("masterids")), &b.masterids, |out, id| {
        int(out, *id)
    });
    doc.opt_str(key!("description"), &b.description);
    doc.opt_str(key!("description_format"), &b.description_format);
    doc.opt_str(key!("description_html"), &b.description_html);
    doc.opt_int(key!("projectid"), b.projectid);
    list(doc.key(key!("tags")), &b.tags, |out, tag| {
        write_str(out, tag)
    });
    doc.close();
}

fn step(out: &mut Vec<u8>, opts: &PayloadOptions, build: &Build, s: &Step, nonce: u64) {
    let mut doc = Object::open(out);
    doc.int(key!("stepid"), s.stepid);
    doc.int(key!("number"), s.number);
    doc.str(key!("name"), &s.name);
    doc.int(key!("buildid"), s.buildid);
    doc.opt_int(key!("started_at"), s.started_at);
    doc.opt_int(key!("locks_acquired_at"), s.locks_acquired_at);
    doc.bool(key!("complete"), s.complete);
    doc.opt_int(key!("complete_at"), s.complete_at);
    doc.str(key!("state_string"), &s.state_string);
    doc.opt_int(key!("results"), s.results);
    list(doc.key(key!("urls")), &s.urls, |out, u| {
        let mut url = Object::open(out);
        url.str(key!("name"), &u.name);
        url.str(key!("url"), &u.url);
        url.close();
    });
    doc.bool(key!("hidden"), s.hidden);
    if opts.want_logs {
        list(doc.key(key!("logs")), &s.logs, |out, l| {
            log(out, opts, build, s, l, nonce)
        });
    }
    doc.close();
}

fn log(out: &mut Vec<u8>, opts: &PayloadOptions, build: &Build, s: &Step, l: &Log, nonce: u64) {
    let base = &opts.buildbot_url;
    let mut doc = Object::open(out);
    doc.int(key!("logid"), l.logid);
    doc.str(key!("name"), &l.name);
    doc.str(key!("slug"), &l.slug);
    doc.int(key!("stepid"), l.stepid);
    doc.bool(key!("complete"), l.complete);
    doc.int(key!("num_lines"), l.num_lines);
    doc.str(key!("type"), &l.type_);
    doc.str(key!("stepname"), &s.name);
    doc.str(
        key!("url"),
        &format!(
            "{base}#/builders/{}/builds/{}/steps/{}/logs/{}",
            build.builderid, build.number, s.number, l.slug
        ),
    );
    doc.str(
        key!("url_raw"),
        &format!("{base}api/v2/logs/{}/raw", l.logid),
    );
    doc.str(
        key!("url_raw_inline"),
        &format!("{base}api/v2/logs/{}/raw_inline", l.logid),
    );
    let streamed;
    let text = match &l.content {
        Some(LogContent::Text(text)) => Some(text.as_str()),
        Some(LogContent::Stream(_)) => {
            streamed = placeholder(nonce, l.logid);
            Some(streamed.as_str())
        }
        None => None,
    };
    if let Some(text) = text {
        let mut content = Object::open(doc.key(key!("content")));
        content.int(key!("logid"), l.logid);
        content.int(key!("firstline"), 0);
        content.str(key!("content"), text);
        content.close();
    }
    doc.close();
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
        let settings = settings(case);
        let direct = render_body(&settings, kind, &event, 1).expect("renders");
        // The tree that `format_fn` and streamed bodies use encodes to the same bytes.
        let tree = render(&settings, kind, &event, 1).expect("renders");
        assert_eq!(
            crate::encoder::to_vec(&tree),
            direct,
            "tree and direct differ"
        );
        String::from_utf8(direct).unwrap()
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
        let mut text = Vec::new();
        properties(&mut text, &props).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"p": [[1180591620717411303424, 1e+16, 0.5, "\ud83d\ude00"], "Test"]}"#
        );
    }

    #[test]
    fn a_repeated_property_keeps_its_first_place_and_last_value() {
        let prop = |name: &str, value: &str| Property {
            name: name.into(),
            value: value.into(),
            source: "S".into(),
        };
        let props = vec![prop("a", "1"), prop("b", "2"), prop("a", "3")];
        let mut text = Vec::new();
        properties(&mut text, &props).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"a": [3, "S"], "b": [2, "S"]}"#
        );
    }

    #[test]
    fn a_property_out_of_a_doubles_range_is_refused() {
        let props = vec![Property {
            name: "huge".into(),
            value: "[1, 1e400]".into(),
            source: "Test".into(),
        }];
        match properties(&mut Vec::new(), &props) {
            Err(PushError::InvalidInput(e)) => {
                assert_eq!(e.key, "properties.huge");
                assert!(e.message.contains("1e+400"), "{}", e.message);
            }
            other => panic!("expected a typed error, got {other:?}"),
        }
    }

    #[test]
    fn a_property_that_is_not_json_is_a_typed_error() {
        let props = vec![Property {
            name: "broken".into(),
            value: "{nope".into(),
            source: "Test".into(),
        }];
        match properties(&mut Vec::new(), &props) {
            Err(PushError::InvalidInput(e)) => assert_eq!(e.key, "properties.broken"),
            other => panic!("expected a typed error, got {other:?}"),
        }
    }
}
