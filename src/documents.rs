//! Buildbot's JSON forms of the WIT records: a configuration object with the seed's keys,
//! and the data-API documents of one event. Errors name the key (or JSON path) at fault.
//! Pure: no I/O.

use serde_json::{Map, Value};

use crate::{
    Auth, Build, BuildEvent, Builder, Buildrequest, Buildset, Config, Credentials, InputError, Log,
    LogContent, Patch, Property, ResultMode, Signing, SigningScheme, Sourcestamp, Step, StepUrl,
};

type Result<T> = std::result::Result<T, InputError>;

fn error(key: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        key: key.into(),
        message: message.into(),
    }
}

/// Parses JSON text; a leading UTF-8 byte order mark, which some editors write, is
/// skipped rather than refused. Every reader of a configuration or of documents (the
/// component's exports, the relay, the host's `serve`) parses through it.
pub fn parse_json(text: &str) -> Result<Value> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| error("", format!("not JSON: {e}")))
}

/// Takes the `body` out of an event's documents: a report the host formatted itself (a
/// Buildbot report generator's formatter output), sent instead of the payload. It must
/// be a JSON object or array, as Buildbot's HTTP client encodes nothing else, with no
/// number out of a double's range (Python would write it as `Infinity`). `None` when
/// absent or `null`.
pub fn take_formatted_body(documents: &mut Value) -> Result<Option<Value>> {
    let Some(body) = documents
        .as_object_mut()
        .and_then(|o| o.shift_remove("body"))
        .filter(|b| !b.is_null())
    else {
        return Ok(None);
    };
    if !(body.is_object() || body.is_array()) {
        return Err(error(
            "body",
            "expected a JSON object or array (a formatter's report); Buildbot sends no body for anything else",
        ));
    }
    if let Some(number) = crate::encoder::non_finite(&body) {
        return Err(error(
            "body",
            format!("{number} is out of a double's range; it would be sent as Infinity, which JSON parsers refuse"),
        ));
    }
    Ok(Some(body))
}

/// A log whose text a host streams from a local file (`content_file`) instead of
/// carrying it inline (`content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFile<'a> {
    /// The step's index in `steps`.
    pub step: usize,
    /// The log's index in the step's `logs`.
    pub log: usize,
    /// The path, as the documents give it.
    pub path: &'a str,
}

impl ContentFile<'_> {
    /// The JSON path of the `content_file` key, as errors name it.
    pub fn key(&self) -> String {
        format!("steps[{}].logs[{}].content_file", self.step, self.log)
    }
}

/// Every log of `documents` that names a `content_file` as a string and no `content`:
/// the files a host would open. The one walk of `content_file`: the host library streams
/// them, the relay refuses them (a path on the relay's machine is not the caller's).
pub fn content_files(documents: &Value) -> Vec<ContentFile<'_>> {
    let mut files = Vec::new();
    let Some(steps) = documents.get("steps").and_then(Value::as_array) else {
        return files;
    };
    for (step, entry) in steps.iter().enumerate() {
        let Some(logs) = entry.get("logs").and_then(Value::as_array) else {
            continue;
        };
        for (log, entry) in logs.iter().enumerate() {
            if let (Some(path), None) = (
                entry.get("content_file").and_then(Value::as_str),
                entry.get("content").filter(|c| !c.is_null()),
            ) {
                files.push(ContentFile { step, log, path });
            }
        }
    }
    files
}

/// A JSON object being read, with its path for error messages.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Object<'a> {
    fn root(value: &'a Value, what: &str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Object {
                map,
                path: String::new(),
            }),
            _ => Err(error("", format!("expected a JSON object of {what}"))),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value at `key`, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// `read` of the value at `key`, `None` when absent or `null`. The key's path is built
    /// only for an error: an event reads about a hundred fields, and building each path
    /// up front was a `format!` and an allocation per field.
    fn opt_with<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => read(value)
                .map(Some)
                .ok_or_else(|| error(self.key(key), expected)),
        }
    }

    fn with<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
        expected: &str,
    ) -> Result<T> {
        self.opt_with(key, read, expected)?
            .ok_or_else(|| error(self.key(key), "is missing"))
    }

    fn int(&self, key: &str) -> Result<i64> {
        self.with(key, Value::as_i64, EXPECTED_INT)
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>> {
        self.opt_with(key, Value::as_i64, EXPECTED_INT)
    }

    fn string(&self, key: &str) -> Result<String> {
        self.with(key, as_string, EXPECTED_STRING)
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.opt_with(key, as_string, EXPECTED_STRING)
    }

    fn boolean(&self, key: &str) -> Result<bool> {
        self.with(key, Value::as_bool, EXPECTED_BOOL)
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt_with(key, Value::as_bool, EXPECTED_BOOL)
    }

    fn object(&self, key: &str) -> Result<Object<'a>> {
        self.opt_object(key)?
            .ok_or_else(|| error(self.key(key), "is missing"))
    }

    fn opt_object(&self, key: &str) -> Result<Option<Object<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Object {
                map,
                path: self.key(key),
            })),
            Some(_) => Err(error(self.key(key), "expected an object")),
        }
    }

    fn list<T>(&self, key: &str, item: impl Fn(&'a Value, String) -> Result<T>) -> Result<Vec<T>> {
        self.opt_list(key, item).map(Option::unwrap_or_default)
    }

    fn opt_list<T>(
        &self,
        key: &str,
        item: impl Fn(&'a Value, String) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| item(v, format!("{}[{i}]", self.key(key))))
                .collect::<Result<Vec<T>>>()
                .map(Some),
            Some(_) => Err(error(self.key(key), "expected a list")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.opt_list(key, |v, path| expect_string(v, &path))
    }
}

fn as_object(value: &Value, path: String) -> Result<Object<'_>> {
    match value {
        Value::Object(map) => Ok(Object { map, path }),
        _ => Err(error(path, "expected an object")),
    }
}

const EXPECTED_INT: &str = "expected an integer";
const EXPECTED_STRING: &str = "expected a string";
const EXPECTED_BOOL: &str = "expected true or false";

fn as_string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn expect_int(value: &Value, key: &str) -> Result<i64> {
    value.as_i64().ok_or_else(|| error(key, EXPECTED_INT))
}

fn expect_string(value: &Value, key: &str) -> Result<String> {
    as_string(value).ok_or_else(|| error(key, EXPECTED_STRING))
}

/// The configuration keys `parse_config` accepts, in docs/options.md's order: the one list of
/// them. The WIT's `config` record names each in its field's documentation, and the
/// Buildbot plugin's options are held to it (`tests/config_keys.rs`, the plugin's tests).
pub const CONFIG_KEYS: [&str; 35] = [
    "serverUrl",
    "buildbotURL",
    "user",
    "password",
    "auth",
    "headers",
    "format_fn",
    "builders",
    "tags",
    "branches",
    "schedulers",
    "mode",
    "wantProperties",
    "wantSteps",
    "wantLogs",
    "wantPreviousBuild",
    "debug",
    "verify",
    "skipEncoding",
    "connectTimeoutSeconds",
    "timeoutSeconds",
    "maxAttempts",
    "retryDeadlineSeconds",
    "signingScheme",
    "signingSecret",
    "caFile",
    "trustSystemRoots",
    "clientCertFile",
    "clientKeyFile",
    "deadLetterAfterSeconds",
    "deadLetterRetentionDays",
    "maxPendingEvents",
    "maxBodyBytes",
    "inboundToken",
    "inboundSecret",
];

/// The keys only the relay world reads (how its callers authenticate); a reporter
/// ignores them, and the Buildbot plugin does not offer them.
pub const RELAY_ONLY_KEYS: [&str; 2] = ["inboundToken", "inboundSecret"];

/// Buildbot's default `buildbotURL`.
pub const DEFAULT_BUILDBOT_URL: &str = "http://localhost:8080/";

/// Parses a configuration object with the seed's keys; see the WIT `parse-config`.
pub fn config_from_json(value: &Value) -> Result<Config> {
    let o = Object::root(value, "options")?;
    if let Some(unknown) = o.map.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
        return Err(error(
            unknown.as_str(),
            format!(
                "is not an option; expected one of {}",
                CONFIG_KEYS.join(", ")
            ),
        ));
    }
    let headers = match o.opt_object("headers")? {
        None => vec![],
        Some(h) => h
            .map
            .iter()
            .map(|(name, v)| {
                let value = expect_string(v, "headers").map_err(|_| {
                    error(
                        "headers",
                        format!("the value of header {name:?} must be a string"),
                    )
                })?;
                Ok((name.clone(), value))
            })
            .collect::<Result<_>>()?,
    };
    Ok(Config {
        server_url: o.string("serverUrl")?,
        buildbot_url: o
            .opt_string("buildbotURL")?
            .unwrap_or_else(|| DEFAULT_BUILDBOT_URL.into()),
        user: o.opt_string("user")?,
        password: o.opt_string("password")?,
        auth: o.get("auth").map(auth).transpose()?,
        headers,
        format_fn: o.opt_string("format_fn")?,
        builders: o.strings("builders")?,
        tags: o.strings("tags")?,
        branches: o.strings("branches")?,
        schedulers: o.strings("schedulers")?,
        mode: o.get("mode").map(mode).transpose()?.unwrap_or_default(),
        want_properties: o.opt_bool("wantProperties")?.unwrap_or(false),
        want_steps: o.opt_bool("wantSteps")?.unwrap_or(false),
        want_logs: o.opt_bool("wantLogs")?.unwrap_or(false),
        want_previous_build: o.opt_bool("wantPreviousBuild")?.unwrap_or(false),
        debug: o.opt_bool("debug")?.unwrap_or(false),
        verify: o.opt_bool("verify")?.unwrap_or(true),
        skip_encoding: o.opt_bool("skipEncoding")?.unwrap_or(false),
        connect_timeout_ms: seconds(&o, "connectTimeoutSeconds")?,
        timeout_ms: seconds(&o, "timeoutSeconds")?,
        max_attempts: match o.opt_int("maxAttempts")? {
            None => None,
            Some(n) if (1..=100).contains(&n) => Some(n as u32),
            Some(_) => {
                return Err(error(
                    "maxAttempts",
                    "expected a whole number from 1 to 100",
                ))
            }
        },
        retry_deadline_ms: seconds(&o, "retryDeadlineSeconds")?,
        signing: signing(&o)?,
        ca_file: o.opt_string("caFile")?,
        trust_system_roots: o.opt_bool("trustSystemRoots")?,
        client_cert_file: o.opt_string("clientCertFile")?,
        client_key_file: o.opt_string("clientKeyFile")?,
        dead_letter_after_ms: match o.get("deadLetterAfterSeconds").map(Value::as_u64) {
            None => None,
            // Ten years is past any outage worth waiting out; the bound keeps ms in range.
            Some(Some(n)) if n > 0 && n <= 10 * 365 * 86_400 => Some(n * 1000),
            Some(_) => {
                return Err(error(
                    "deadLetterAfterSeconds",
                    "expected a whole number of seconds from 1 to 315360000 (10 years)",
                ))
            }
        },
        dead_letter_retention_days: match o.get("deadLetterRetentionDays").map(Value::as_u64) {
            None => None,
            Some(Some(n)) if (1..=3650).contains(&n) => Some(n as u32),
            Some(_) => {
                return Err(error(
                    "deadLetterRetentionDays",
                    "expected a whole number of days from 1 to 3650",
                ))
            }
        },
        max_pending_events: match o.get("maxPendingEvents").map(Value::as_u64) {
            None => None,
            Some(Some(n)) if n > 0 => Some(n),
            Some(_) => {
                return Err(error(
                    "maxPendingEvents",
                    "expected a whole number of events, at least 1",
                ))
            }
        },
        // The range is `configure`'s to check, like every other value.
        max_body_bytes: match o.get("maxBodyBytes").map(Value::as_u64) {
            None => None,
            Some(Some(n)) => Some(n),
            Some(None) => return Err(error("maxBodyBytes", "expected a whole number of bytes")),
        },
        inbound_token: o.opt_string("inboundToken")?,
        inbound_secret: o.opt_string("inboundSecret")?,
    })
}

/// `signingScheme` and `signingSecret`, which only make sense together.
fn signing(o: &Object<'_>) -> Result<Option<Signing>> {
    let scheme = match o.opt_string("signingScheme")?.as_deref() {
        None => None,
        Some("standard-webhooks") => Some(SigningScheme::StandardWebhooks),
        Some("github") => Some(SigningScheme::Github),
        Some(_) => {
            return Err(error(
                "signingScheme",
                "expected \"standard-webhooks\" or \"github\"",
            ))
        }
    };
    match (scheme, o.opt_string("signingSecret")?) {
        (Some(scheme), Some(secret)) => Ok(Some(Signing { scheme, secret })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(error(
            "signingSecret",
            "signingScheme needs a signingSecret",
        )),
        (None, Some(_)) => Err(error(
            "signingScheme",
            "signingSecret needs a signingScheme",
        )),
    }
}

fn seconds(o: &Object<'_>, key: &str) -> Result<Option<u32>> {
    let Some(v) = o.get(key) else { return Ok(None) };
    match v.as_f64() {
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Some((s * 1000.0).ceil() as u32)),
        _ => Err(error(
            key,
            "expected a number of seconds above 0 and at most 86400",
        )),
    }
}

/// `auth`: Buildbot's `("user", "password")` tuple, `{"user": …, "password": …}`, or
/// `{"bearer": "token"}`.
fn auth(value: &Value) -> Result<Auth> {
    let expected =
        "expected [user, password], {\"user\": …, \"password\": …} or {\"bearer\": token}";
    match value {
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(user), Value::String(password)] => Ok(Auth::Basic(Credentials {
                user: user.clone(),
                password: password.clone(),
            })),
            _ => Err(error("auth", expected)),
        },
        Value::Object(map) => {
            let o = Object {
                map,
                path: "auth".into(),
            };
            if let Some(token) = o.opt_string("bearer")? {
                return Ok(Auth::Bearer(token));
            }
            match (o.opt_string("user")?, o.opt_string("password")?) {
                (Some(user), Some(password)) => Ok(Auth::Basic(Credentials { user, password })),
                _ => Err(error("auth", expected)),
            }
        }
        _ => Err(error("auth", expected)),
    }
}

/// `mode`: `"all"`, one mode name, or a list of them.
fn mode(value: &Value) -> Result<Vec<ResultMode>> {
    let one = |v: &Value| -> Result<ResultMode> {
        Ok(match v.as_str() {
            Some("all") => ResultMode::All,
            Some("failing") => ResultMode::Failing,
            Some("passing") => ResultMode::Passing,
            Some("warnings") => ResultMode::Warnings,
            Some("exception") => ResultMode::Exception,
            Some("cancelled") => ResultMode::Cancelled,
            Some("change") => ResultMode::Change,
            Some("problem") => ResultMode::Problem,
            _ => {
                return Err(error(
                    "mode",
                    "expected all, failing, passing, warnings, exception, cancelled, change or problem (or a list of them)",
                ))
            }
        })
    };
    match value {
        Value::Array(items) if items.is_empty() => Err(error(
            "mode",
            "an empty list selects no result; leave mode out or give \"all\"",
        )),
        Value::Array(items) => items.iter().map(one).collect(),
        single => Ok(vec![one(single)?]),
    }
}

/// Parses the data-API documents of one event; see the WIT `parse-event`.
pub fn event_from_json(value: &Value) -> Result<BuildEvent> {
    let o = Object::root(value, "data-API documents")?;
    Ok(BuildEvent {
        build: build(o.object("build")?)?,
        properties: o
            .opt_object("properties")?
            .map(properties)
            .transpose()?
            .unwrap_or_default(),
        buildrequest: buildrequest(o.object("buildrequest")?)?,
        buildset: buildset(o.object("buildset")?)?,
        parentbuild: o.opt_object("parentbuild")?.map(build).transpose()?,
        parentbuilder: o.opt_object("parentbuilder")?.map(builder).transpose()?,
        builder: builder(o.object("builder")?)?,
        steps: o.list("steps", |v, path| step(as_object(v, path)?))?,
        prev_build: o.opt_object("prev_build")?.map(build).transpose()?,
    })
}

/// `{name: [value, source]}` into properties; values are kept as JSON text.
fn properties(o: Object<'_>) -> Result<Vec<Property>> {
    o.map
        .iter()
        .map(|(name, entry)| match entry.as_array().map(Vec::as_slice) {
            Some([value, Value::String(source)]) => Ok(Property {
                name: name.clone(),
                value: value.to_string(),
                source: source.clone(),
            }),
            _ => Err(error(o.key(name), "expected [value, source]")),
        })
        .collect()
}

fn build(o: Object<'_>) -> Result<Build> {
    Ok(Build {
        buildid: o.int("buildid")?,
        number: o.int("number")?,
        builderid: o.int("builderid")?,
        buildrequestid: o.int("buildrequestid")?,
        workerid: o.int("workerid")?,
        masterid: o.int("masterid")?,
        started_at: o.int("started_at")?,
        complete_at: o.opt_int("complete_at")?,
        locks_duration_s: o.opt_int("locks_duration_s")?.unwrap_or(0),
        complete: o.boolean("complete")?,
        state_string: o.opt_string("state_string")?.unwrap_or_default(),
        results: o.opt_int("results")?,
        properties: o.opt_object("properties")?.map(properties).transpose()?,
    })
}

fn builder(o: Object<'_>) -> Result<Builder> {
    Ok(Builder {
        builderid: o.int("builderid")?,
        name: o.string("name")?,
        masterids: o.list("masterids", |v, path| expect_int(v, &path))?,
        description: o.opt_string("description")?,
        description_format: o.opt_string("description_format")?,
        description_html: o.opt_string("description_html")?,
        projectid: o.opt_int("projectid")?,
        tags: o.list("tags", |v, path| expect_string(v, &path))?,
    })
}

fn buildrequest(o: Object<'_>) -> Result<Buildrequest> {
    Ok(Buildrequest {
        buildrequestid: o.int("buildrequestid")?,
        buildsetid: o.int("buildsetid")?,
        builderid: o.int("builderid")?,
        priority: o.opt_int("priority")?.unwrap_or(0),
        claimed: o.boolean("claimed")?,
        claimed_at: o.opt_int("claimed_at")?,
        claimed_by_masterid: o.opt_int("claimed_by_masterid")?,
        complete: o.boolean("complete")?,
        results: o.opt_int("results")?,
        submitted_at: o.int("submitted_at")?,
        complete_at: o.opt_int("complete_at")?,
        waited_for: o.boolean("waited_for")?,
        properties: o.opt_object("properties")?.map(properties).transpose()?,
    })
}

fn buildset(o: Object<'_>) -> Result<Buildset> {
    Ok(Buildset {
        bsid: o.int("bsid")?,
        external_idstring: o.opt_string("external_idstring")?,
        reason: o.opt_string("reason")?.unwrap_or_default(),
        submitted_at: o.int("submitted_at")?,
        complete: o.boolean("complete")?,
        complete_at: o.opt_int("complete_at")?,
        results: o.opt_int("results")?,
        parent_buildid: o.opt_int("parent_buildid")?,
        parent_relationship: o.opt_string("parent_relationship")?,
        rebuilt_buildid: o.opt_int("rebuilt_buildid")?,
        sourcestamps: o.list("sourcestamps", |v, path| sourcestamp(as_object(v, path)?))?,
    })
}

fn sourcestamp(o: Object<'_>) -> Result<Sourcestamp> {
    Ok(Sourcestamp {
        ssid: o.int("ssid")?,
        branch: o.opt_string("branch")?,
        revision: o.opt_string("revision")?,
        project: o.opt_string("project")?.unwrap_or_default(),
        repository: o.opt_string("repository")?.unwrap_or_default(),
        codebase: o.opt_string("codebase")?.unwrap_or_default(),
        created_at: o.int("created_at")?,
        patch: o.opt_object("patch")?.map(patch).transpose()?,
    })
}

fn patch(o: Object<'_>) -> Result<Patch> {
    Ok(Patch {
        patchid: o.int("patchid")?,
        level: o.opt_int("level")?.unwrap_or(1),
        subdir: o.opt_string("subdir")?,
        author: o.opt_string("author")?,
        comment: o.opt_string("comment")?,
        body: o.opt_string("body")?,
    })
}

fn step(o: Object<'_>) -> Result<Step> {
    Ok(Step {
        stepid: o.int("stepid")?,
        number: o.int("number")?,
        name: o.string("name")?,
        buildid: o.int("buildid")?,
        started_at: o.opt_int("started_at")?,
        locks_acquired_at: o.opt_int("locks_acquired_at")?,
        complete: o.boolean("complete")?,
        complete_at: o.opt_int("complete_at")?,
        state_string: o.opt_string("state_string")?.unwrap_or_default(),
        results: o.opt_int("results")?,
        urls: o.list("urls", |v, path| {
            let u = as_object(v, path)?;
            Ok(StepUrl {
                name: u.string("name")?,
                url: u.string("url")?,
            })
        })?,
        hidden: o.opt_bool("hidden")?.unwrap_or(false),
        logs: o.list("logs", |v, path| log(as_object(v, path)?))?,
    })
}

fn log(o: Object<'_>) -> Result<Log> {
    Ok(Log {
        logid: o.int("logid")?,
        name: o.string("name")?,
        slug: o.string("slug")?,
        stepid: o.int("stepid")?,
        complete: o.boolean("complete")?,
        num_lines: o.opt_int("num_lines")?.unwrap_or(0),
        type_: o.string("type")?,
        content: log_content(&o)?,
    })
}

/// A log's inline `content`. `content_file` (a path a host streams the text from) must
/// be a string and comes instead of `content`, never beside it; the host opens it.
fn log_content(o: &Object<'_>) -> Result<Option<LogContent>> {
    let content = o.opt_string("content")?;
    if let Some(file) = o.map.get("content_file") {
        if !file.is_string() {
            return Err(error(
                o.key("content_file"),
                "expected a file path (a string)",
            ));
        }
        if content.is_some() {
            return Err(error(
                o.key("content_file"),
                "give content or content_file, not both",
            ));
        }
    }
    Ok(content.map(LogContent::Text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_parses_with_or_without_a_byte_order_mark() {
        assert_eq!(parse_json("\u{feff}{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_json("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert!(parse_json("{").unwrap_err().message.starts_with("not JSON"));
    }

    #[test]
    fn content_files_are_the_logs_to_stream() {
        let doc = json!({"steps": [
            {"logs": [{"content": "inline"}, {"content_file": "/tmp/a"}]},
            {"logs": [{"content_file": 5}, {"content_file": "/tmp/b", "content": null}]},
        ]});
        let files = content_files(&doc);
        assert_eq!(
            files.iter().map(|f| (f.key(), f.path)).collect::<Vec<_>>(),
            [
                ("steps[0].logs[1].content_file".to_string(), "/tmp/a"),
                ("steps[1].logs[1].content_file".to_string(), "/tmp/b"),
            ]
        );
        assert!(content_files(&json!({"steps": "none"})).is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        let key = |v: Value| {
            config_from_json(&v)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.key)
        };
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "wantProperty": true})),
            "wantProperty"
        );
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "wantSteps": "yes"})),
            "wantSteps"
        );
        assert_eq!(key(json!({"serverUrl": 5})), "serverUrl");
        assert_eq!(key(json!({})), "serverUrl");
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "headers": {"X": 1}})),
            "headers"
        );
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "builders": "b"})),
            "builders"
        );
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "mode": "sometimes"})),
            "mode"
        );
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "auth": ["only-user"]})),
            "auth"
        );
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "timeoutSeconds": -1})),
            "timeoutSeconds"
        );
        assert_eq!(key(json!({"serverUrl": "http://h/", "mode": []})), "mode");
        assert_eq!(
            key(json!({"serverUrl": "http://h/", "maxBodyBytes": "big"})),
            "maxBodyBytes"
        );
        assert_eq!(key(json!({"serverUrl": "http://h/"})), "");
    }

    #[test]
    fn a_log_gives_content_or_a_content_file_path() {
        let key = |log: Value| {
            let mut doc = minimal_event();
            doc["steps"] = json!([{"stepid": 1, "number": 0, "name": "s", "buildid": 1,
                "complete": true, "logs": [log]}]);
            event_from_json(&doc)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.key)
        };
        let log = json!({"logid": 1, "name": "n", "slug": "n", "stepid": 1, "complete": true,
            "type": "s"});
        let with = |extra: Value| {
            let mut l = log.clone();
            l.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            l
        };
        assert_eq!(key(with(json!({"content": "text"}))), "");
        assert_eq!(
            key(with(json!({"content_file": 123}))),
            "steps[0].logs[0].content_file"
        );
        assert_eq!(
            key(with(json!({"content": "t", "content_file": "/tmp/x"}))),
            "steps[0].logs[0].content_file"
        );
    }

    #[test]
    fn config_defaults_follow_buildbot() {
        let c = config_from_json(&json!({"serverUrl": "http://h/"})).unwrap();
        assert_eq!(c.buildbot_url, DEFAULT_BUILDBOT_URL);
        assert!(!c.want_properties && !c.want_steps && !c.want_logs && !c.want_previous_build);
        assert!(c.verify, "TLS verification is on unless switched off");
        assert!(c.mode.is_empty() && c.builders.is_none());
    }

    #[test]
    fn config_reads_every_option() {
        let c = config_from_json(&json!({
            "serverUrl": "http://h/x?y", "buildbotURL": "http://bb/", "auth": ["u", "p"],
            "headers": {"B": "2", "A": "1"}, "format_fn": "{}", "builders": ["b1"],
            "tags": ["t"], "branches": ["main"], "schedulers": ["s"], "mode": ["failing", "change"],
            "wantProperties": true, "wantSteps": true, "wantLogs": true, "wantPreviousBuild": true,
            "debug": true, "verify": false, "skipEncoding": true,
            "connectTimeoutSeconds": 1.5, "timeoutSeconds": 2
        }))
        .unwrap();
        assert_eq!(
            c.headers,
            vec![("B".into(), "2".into()), ("A".into(), "1".into())]
        );
        assert!(
            matches!(c.auth, Some(Auth::Basic(ref cr)) if cr.user == "u" && cr.password == "p")
        );
        assert_eq!(c.mode, vec![ResultMode::Failing, ResultMode::Change]);
        assert_eq!(
            (c.connect_timeout_ms, c.timeout_ms),
            (Some(1500), Some(2000))
        );
        assert!(c.want_logs && c.debug && !c.verify && c.skip_encoding);
    }

    /// The fewest documents an event is made of.
    fn minimal_event() -> Value {
        json!({
            "build": {"buildid": 1, "number": 1, "builderid": 7, "buildrequestid": 1,
                      "workerid": 1, "masterid": 1, "started_at": 1, "complete": false},
            "buildrequest": {"buildrequestid": 1, "buildsetid": 1, "builderid": 7,
                             "claimed": true, "complete": false, "submitted_at": 1,
                             "waited_for": false},
            "buildset": {"bsid": 1, "submitted_at": 1, "complete": false, "sourcestamps": []},
            "builder": {"builderid": 7, "name": "linux"},
        })
    }

    #[test]
    fn event_errors_give_the_json_path() {
        let mut doc = json!({
            "build": {"buildid": 1, "number": 1, "builderid": 1, "buildrequestid": 1,
                      "workerid": 1, "masterid": 1, "started_at": "yesterday", "complete": false},
        });
        let e = event_from_json(&doc).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("build.started_at", "expected an integer")
        );
        doc["build"]["started_at"] = json!(5);
        assert_eq!(event_from_json(&doc).unwrap_err().key, "buildrequest");
    }

    #[test]
    fn a_formatted_body_is_taken_out_of_the_documents() {
        let mut doc = json!({"build": {}, "body": {"b": 1, "a": [2]}});
        let body = take_formatted_body(&mut doc).unwrap().unwrap();
        assert_eq!(crate::encoder::to_vec(&body), br#"{"b": 1, "a": [2]}"#);
        assert!(doc.get("body").is_none(), "the documents no longer hold it");
        assert_eq!(
            take_formatted_body(&mut json!({"body": null})).unwrap(),
            None
        );
        assert_eq!(take_formatted_body(&mut json!({})).unwrap(), None);
        let too_big: Value = serde_json::from_str(r#"{"x": 1e400}"#).unwrap();
        for refused in [json!("text"), json!(3), too_big] {
            let e = take_formatted_body(&mut json!({"body": refused})).unwrap_err();
            assert_eq!(e.key, "body");
        }
    }
}
