//! The bad-input corpus (`tests/bad_input/cases.json`): every case runs through
//! `status-push push` against its own loopback receiver, and must end in the expected
//! exit code with one line on stderr naming the key or file at fault, send nothing where
//! nothing should go, and stay within a wall time and a peak RSS. Big inputs are made
//! here, at test time; special files (a FIFO, a directory, /dev/zero) too. Plus closed
//! stdout and stderr pipes.

mod common;

use common::{wasm, workspace};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_push_cli::receiver::{Receiver, Recorded, Reply};

/// A case must finish within this (generous: a debug build, a loaded 2-core machine).
const WALL_LIMIT: Duration = Duration::from_secs(10);
/// And its process must stay below this peak RSS.
const RSS_LIMIT_KIB: i64 = 400 * 1024;
/// Cases run at once.
const CONCURRENCY: usize = 3;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input")
}

fn fixture() -> Value {
    let path = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fresh scratch directory with the special files the cases point at.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("status-push-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::create_dir_all(root.join("a-directory")).unwrap();
        let fifo = root.join("a-fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo");
        std::fs::write(root.join("big-file"), vec![b'x'; 2 << 20]).unwrap();
        Scratch { root }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Replaces the placeholders in every string of `value`.
fn substitute(value: &mut Value, vars: &[(&str, String)]) {
    match value {
        Value::String(s) => {
            for (name, with) in vars {
                if s.contains(name) {
                    *s = s.replace(name, with);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, vars)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, vars)),
        _ => {}
    }
}

fn substitute_text(text: &str, vars: &[(&str, String)]) -> String {
    let mut text = text.to_string();
    for (name, with) in vars {
        text = text.replace(name, with);
    }
    text
}

fn one_step_with_log(build: &mut Value, log: &Value) {
    let buildid = build["build"]["buildid"].clone();
    let mut entry = json!({"logid": 1, "name": "stdio", "slug": "stdio", "stepid": 1,
        "complete": true, "num_lines": 2, "type": "s"});
    for (k, v) in log.as_object().unwrap() {
        entry[k] = v.clone();
    }
    build["steps"] = json!([{"stepid": 1, "number": 0, "name": "compile", "buildid": buildid,
        "results": 0, "state_string": "compiled", "started_at": 1, "complete": true,
        "complete_at": 2, "hidden": false, "urls": [], "logs": [entry]}]);
}

/// Writes the case's inputs into `dir`; returns the CLI's arguments.
fn prepare(case: &Value, dir: &Path, vars: &[(&str, String)]) -> Vec<String> {
    let path_of = |v: &Value| substitute_text(v.as_str().unwrap(), vars);
    // The configuration.
    let config_path = if let Some(p) = case.get("config_path") {
        path_of(p)
    } else {
        let path = dir.join("config.json");
        let mut bytes = if let Some(text) = case.get("config_text") {
            substitute_text(text.as_str().unwrap(), vars).into_bytes()
        } else if let Some(kind) = case.get("generate_config_file") {
            assert_eq!(kind, "config_2mib");
            json!({"serverUrl": vars[0].1, "pad": "x".repeat(2 << 20)})
                .to_string()
                .into_bytes()
        } else {
            let mut config = case["config"].clone();
            if config.is_null() {
                config = json!({"serverUrl": "$URL"});
            }
            substitute(&mut config, vars);
            match case.get("generate_config").and_then(Value::as_str) {
                Some("url_100kb") => {
                    config["serverUrl"] = json!(format!("{}?q={}", vars[0].1, "a".repeat(100_000)))
                }
                Some("buildbot_url_10kb") => {
                    config["buildbotURL"] = json!(format!(
                        "http://buildbot.example.org/{}/",
                        "a".repeat(10_000)
                    ))
                }
                Some("headers_140kib") => {
                    let headers: serde_json::Map<_, _> = (0..140)
                        .map(|i| (format!("X-Pad-{i}"), json!("v".repeat(1000))))
                        .collect();
                    config["headers"] = Value::Object(headers);
                }
                Some("format_fn_50mb") => {
                    config["format_fn"] = json!(r#"{{ "[" ~ ("1," * 25000000) ~ "1]" }}"#)
                }
                Some(other) => panic!("unknown generator {other}"),
                None => {}
            }
            config.to_string().into_bytes()
        };
        if case.get("config_not_utf8").is_some() {
            bytes.insert(bytes.len() - 2, 0xff);
        }
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    // The build documents.
    let build_path = if let Some(p) = case.get("build_path") {
        path_of(p)
    } else {
        let path = dir.join("build.json");
        if let Some(text) = case.get("build_text") {
            let mut bytes = text.as_str().unwrap().as_bytes().to_vec();
            if case.get("build_not_utf8").is_some() {
                bytes.insert(bytes.len() - 2, 0xff);
            }
            std::fs::write(&path, bytes).unwrap();
        } else if case.get("generate_build").and_then(Value::as_str) == Some("sparse_1gib") {
            File::create(&path).unwrap().set_len(1 << 30).unwrap();
        } else {
            let mut build = fixture();
            if let Some(merge) = case.get("build_merge") {
                for (k, v) in merge.as_object().unwrap() {
                    match (build.get_mut(k), v) {
                        (Some(Value::Object(into)), Value::Object(from)) => {
                            into.extend(from.clone())
                        }
                        _ => build[k] = v.clone(),
                    }
                }
            }
            if let Some(log) = case.get("build_log") {
                let mut log = log.clone();
                substitute(&mut log, vars);
                one_step_with_log(&mut build, &log);
            }
            match case.get("generate_build").and_then(Value::as_str) {
                Some("build_33mib") => {
                    build["properties"]["pad"] = json!(["x".repeat(33 << 20), "test"])
                }
                Some("property_100mb") => {
                    build["properties"]["huge"] = json!(["x".repeat(100_000_000), "test"])
                }
                Some("steps_100k") => {
                    let buildid = build["build"]["buildid"].clone();
                    build["steps"] = (0..100_000)
                        .map(|i| {
                            json!({"stepid": i, "number": i, "name": format!("step {i}"),
                                "buildid": buildid, "results": 0, "state_string": "done",
                                "started_at": 1, "complete": true, "complete_at": 2,
                                "hidden": false, "urls": [], "logs": []})
                        })
                        .collect();
                }
                Some(other) => panic!("unknown generator {other}"),
                None => {}
            }
            let mut text = build.to_string();
            if let Some(extra) = case.get("build_merge_text") {
                // A raw member (a number serde_json would not keep), replacing the key.
                let extra = extra.as_str().unwrap();
                let key = &extra[..extra.find(':').unwrap()];
                let mut doc = build.clone();
                doc.as_object_mut()
                    .unwrap()
                    .remove(key.trim_matches(|c| c == '"' || c == ' '));
                text = doc.to_string();
                text.insert_str(text.len() - 1, &format!(", {extra}"));
            }
            std::fs::write(&path, text).unwrap();
        }
        path.display().to_string()
    };
    let mut args = vec![
        "push".to_string(),
        "--config".into(),
        config_path,
        "--event".into(),
        "started".into(),
        "--build".into(),
        build_path,
    ];
    if let Some(outbox) = case.get("outbox") {
        args.push("--outbox".into());
        args.push(path_of(outbox));
    }
    args
}

/// What one run of the CLI did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs the CLI with `args` and waits for it (killing it after 30 s), measuring its
/// peak RSS with wait4.
fn run_cli(args: &[String], dir: &Path, cache: &Path, wasm_path: &Path) -> Run {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("STATUS_PUSH_WASM", wasm_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("the CLI starts");
    let (code, max_rss_kib) = wait_with_rusage(child, Duration::from_secs(30));
    Run {
        code,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        wall: started.elapsed(),
        max_rss_kib,
    }
}

/// The child's exit code (None if killed) and peak RSS in KiB: its `VmHWM` from /proc,
/// sampled until it exits (a high-water mark, so a late sample holds every earlier
/// peak). wait4's `ru_maxrss` would not do: Linux starts it at this test process's own
/// RSS, inherited through fork and exec.
fn wait_with_rusage(mut child: std::process::Child, limit: Duration) -> (Option<i32>, i64) {
    let status_path = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), peak);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_bad_input_ends_in_one_typed_line() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("cases.json")).unwrap())
            .unwrap();
    let cases = manifest["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let scratch = Scratch::new("bad-input");
    let wasm_path = wasm();
    // Warm the compile cache once (a configuration only the component can refuse), so
    // the cases measure themselves, not compilation.
    let warm_config = scratch.root.join("warm.json");
    std::fs::write(
        &warm_config,
        r#"{"serverUrl": "http://127.0.0.1:9/", "wantStep": 1}"#,
    )
    .unwrap();
    let warm = Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(["push", "--event", "started", "--config"])
        .arg(&warm_config)
        .arg("--build")
        .arg(workspace().join("tests/fixtures/buildbot/default_start_finish/started.json"))
        .arg("--cache-dir")
        .arg(scratch.root.join("cache"))
        .env("STATUS_PUSH_WASM", &wasm_path)
        .output()
        .unwrap();
    assert_eq!(warm.status.code(), Some(2), "{warm:?}");
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let worst = Mutex::new((Duration::ZERO, 0i64, String::new()));
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                if let Err(why) = run_case(case, i, &scratch, &wasm_path, &tokio, &worst) {
                    failures.lock().unwrap().push(why);
                }
            });
        }
    });
    let (wall, rss, slowest) = worst.into_inner().unwrap();
    eprintln!(
        "bad input: {} cases, slowest {:.2}s ({slowest}), largest peak RSS {} MiB",
        cases.len(),
        wall.as_secs_f64(),
        rss / 1024
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn run_case(
    case: &Value,
    i: usize,
    scratch: &Scratch,
    wasm_path: &Path,
    tokio: &tokio::runtime::Runtime,
    worst: &Mutex<(Duration, i64, String)>,
) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let dir = scratch.root.join(format!("case-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let reply = Reply {
        status: case["reply"].as_u64().unwrap_or(200) as u16,
        headers: case["retry_after"]
            .as_str()
            .map(|v| vec![("Retry-After".to_string(), v.to_string())])
            .unwrap_or_default(),
    };
    let receiver = tokio
        .block_on(Receiver::start_with(
            0,
            Arc::new(move |_: &Recorded| reply.clone()),
        ))
        .unwrap();
    let vars = [
        ("$URL", format!("{}/hook", receiver.origin())),
        ("$CASE_DIR", corpus_dir().display().to_string()),
        ("$FIFO", scratch.root.join("a-fifo").display().to_string()),
        (
            "$DIR",
            scratch.root.join("a-directory").display().to_string(),
        ),
        (
            "$BIG_FILE",
            scratch.root.join("big-file").display().to_string(),
        ),
    ];
    let args = prepare(case, &dir, &vars);
    let wasm_path = case["wasm"]
        .as_str()
        .map_or_else(|| wasm_path.to_path_buf(), PathBuf::from);
    let run = run_cli(&args, &dir, &scratch.root.join("cache"), &wasm_path);
    // Large generated inputs go as soon as the case is done.
    let _ = std::fs::remove_file(dir.join("build.json"));
    {
        let mut worst = worst.lock().unwrap();
        if run.wall > worst.0 {
            worst.0 = run.wall;
            worst.2 = name.to_string();
        }
        worst.1 = worst.1.max(run.max_rss_kib);
    }
    let sent = receiver.requests().len() as u64;
    let fail = |why: String| {
        Err(format!(
            "{name}: {why}\n  exit {:?}, {:.2}s, {} MiB\n  stdout: {}\n  stderr: {}",
            run.code,
            run.wall.as_secs_f64(),
            run.max_rss_kib / 1024,
            run.stdout.trim(),
            run.stderr.trim()
        ))
    };
    match case["exit"].as_i64() {
        Some(want) if run.code != Some(want as i32) => {
            return fail(format!("expected exit {want}"))
        }
        // `null`: the push itself fails (1) or the input is refused (2), never more.
        None if !matches!(run.code, Some(1 | 2)) => return fail("expected exit 1 or 2".into()),
        _ => {}
    }
    if run.wall > WALL_LIMIT {
        return fail(format!("took longer than {WALL_LIMIT:?}"));
    }
    if run.max_rss_kib > RSS_LIMIT_KIB {
        return fail(format!("peak RSS over {} MiB", RSS_LIMIT_KIB / 1024));
    }
    if run.stderr.contains("wasm backtrace") || run.stderr.contains("panicked") {
        return fail("a backtrace or panic on stderr".into());
    }
    let any_stderr = case["any_stderr"].as_bool().unwrap_or(false);
    if run.code == Some(0) {
        if !any_stderr && !run.stderr.is_empty() {
            return fail("stderr not empty".into());
        }
    } else if run.stderr.lines().count() != 1 || !run.stderr.starts_with("status-push: ") {
        return fail("expected exactly one `status-push: …` line on stderr".into());
    }
    for needle in case["stderr_has"].as_array().unwrap() {
        let needle = needle.as_str().unwrap();
        if !run.stderr.contains(needle) {
            return fail(format!("stderr does not name {needle:?}"));
        }
    }
    for needle in case["stderr_lacks"].as_array().into_iter().flatten() {
        if run.stderr.contains(needle.as_str().unwrap()) {
            return fail(format!("stderr shows {needle}"));
        }
    }
    if let Some(want) = case["stdout"].as_str() {
        if run.stdout.trim() != want {
            return fail(format!("expected stdout {want:?}"));
        }
    }
    // Whatever was to arrive has arrived by the time the CLI exits.
    let want_sent = case["sent"].as_u64().unwrap_or(0);
    if sent != want_sent {
        return fail(format!(
            "the receiver got {sent} request(s), expected {want_sent}"
        ));
    }
    Ok(())
}

fn closed_pipe_config(dir: &Path, origin: &str, debug: bool) -> (PathBuf, PathBuf) {
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"serverUrl": format!("{origin}/hook"), "debug": debug}).to_string(),
    )
    .unwrap();
    let build = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    (config, build)
}

/// Runs `sh -c script` with the CLI as `$0`, returning its exit code within 20 s.
fn run_shell(script: &str, args: &[&Path]) -> Option<i32> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_status-push"))
        .args(args)
        .env("STATUS_PUSH_WASM", wasm())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn closed_stdout_and_stderr_change_nothing() {
    let scratch = Scratch::new("closed-pipes");
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let receiver = tokio.block_on(Receiver::start(0)).unwrap();
    let (plain, build) = closed_pipe_config(&scratch.root, &receiver.origin(), false);
    let debug_dir = scratch.root.join("debug");
    std::fs::create_dir_all(&debug_dir).unwrap();
    let (debug, _) = closed_pipe_config(&debug_dir, &receiver.origin(), true);
    let cache = scratch.root.join("cache");
    // `set -o pipefail` is not POSIX: the pipeline's first exit status comes out through
    // a file instead.
    let status_file = scratch.root.join("status");
    let push = r#"push --config "$1" --event started --build "$2" --cache-dir "$4""#;
    let cases = [
        (
            "stdout into a closed pipe",
            format!(r#"("$0" {push}; echo $? > "$3") | true"#),
            &plain,
        ),
        (
            "stderr into a closed pipe, debug on",
            format!(r#"("$0" {push} 2>&1 >/dev/null; echo $? > "$3") | true"#),
            &debug,
        ),
        (
            "stderr closed, debug on",
            format!(r#""$0" {push} 2>&-; echo $? > "$3""#),
            &debug,
        ),
        (
            "stdout and stderr closed, debug on",
            format!(r#""$0" {push} >&- 2>&-; echo $? > "$3""#),
            &debug,
        ),
    ];
    for (i, (name, script, config)) in cases.iter().enumerate() {
        let _ = std::fs::remove_file(&status_file);
        let started = Instant::now();
        let code = run_shell(script, &[config, &build, &status_file, &cache]);
        assert_eq!(code, Some(0), "{name}: the shell finished");
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        assert_eq!(status.trim(), "0", "{name}: the CLI's exit code");
        assert!(
            started.elapsed() < WALL_LIMIT,
            "{name}: {:?}",
            started.elapsed()
        );
        let got = tokio.block_on(receiver.wait_for(i + 1, Duration::from_secs(5)));
        assert_eq!(got.len(), i + 1, "{name}: delivered once");
    }
}
