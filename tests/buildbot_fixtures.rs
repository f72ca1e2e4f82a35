//! Every recorded Buildbot 4.3.0 case, through the real component and harness, against a
//! loopback receiver: method, path, Buildbot's headers, basic auth and the exact body.

mod common;

use std::time::Duration;

use serde_json::Value;
use status_push_cli::receiver::Receiver;
use status_push_host::{Event, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_sends_what_buildbot_sent() {
    let cases = common::fixture_cases();
    assert!(
        cases.len() >= 9,
        "expected the recorded cases, found {}",
        cases.len()
    );
    // Both builds (WASI 0.2 and 0.3) of the one core, byte for byte.
    for (runtime, case) in common::runtimes()
        .into_iter()
        .flat_map(|runtime| cases.iter().map(move |case| (runtime, case)))
    {
        let name = format!(
            "{} ({})",
            case.file_name().unwrap().to_string_lossy(),
            runtime.wasi()
        );
        let receiver = Receiver::start(0).await.unwrap();
        let mut config = common::read_json(&case.join("config.json"));
        let server_url = config["serverUrl"].as_str().unwrap().to_string();
        config["serverUrl"] = Value::String(common::with_origin(&server_url, &receiver.origin()));
        let mut reporter = common::configured_on(runtime, &config).await;
        let expected = common::read_json(&case.join("expected.json"));

        let mut total = 0;
        for (event, file) in [(Event::Started, "started"), (Event::Finished, "finished")] {
            let documents = std::fs::read_to_string(case.join(format!("{file}.json"))).unwrap();
            let build = reporter.parse_event(&documents).await.unwrap();
            let outcome = reporter.report(event, &build).await;
            let want = expected[file].as_array().unwrap();
            match want.len() {
                0 => assert!(
                    matches!(outcome, Ok(Outcome::Skipped(_))),
                    "{name}/{file}: Buildbot sent nothing, we got {outcome:?}"
                ),
                1 => assert!(
                    matches!(&outcome, Ok(Outcome::Delivered(d)) if d.status == 200),
                    "{name}/{file}: {outcome:?}"
                ),
                n => panic!("{name}/{file}: {n} requests per event is not a recorded shape"),
            }
            total += want.len();
            let got = receiver.wait_for(total, Duration::from_secs(5)).await;
            assert_eq!(got.len(), total, "{name}/{file}: request count");
            let Some(want) = want.first() else { continue };
            let got = &got[total - 1];
            assert_eq!(got.method, want["method"], "{name}/{file}: method");
            assert_eq!(got.path, want["path"], "{name}/{file}: path");
            for (header, value) in want["headers"].as_object().unwrap() {
                assert_eq!(
                    got.header(header),
                    value.as_str(),
                    "{name}/{file}: header {header}"
                );
            }
            let auth = common::basic_auth(got.header("authorization"));
            let want_auth = want["basic_auth"].as_array().map(|a| {
                (
                    a[0].as_str().unwrap().to_string(),
                    a[1].as_str().unwrap().to_string(),
                )
            });
            assert_eq!(auth, want_auth, "{name}/{file}: basic auth");
            let body = std::str::from_utf8(&got.body).expect("body is ASCII");
            let want_body = want["body"].as_str().unwrap();
            assert!(
                body == want_body,
                "{name}/{file}: body differs\n got: {body}\nwant: {want_body}"
            );
        }
    }
}
