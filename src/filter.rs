//! Which events are pushed: Buildbot's report-generator checks (`builders`, `schedulers`,
//! `branches`, `tags`, in Buildbot's order, then the result `mode` on finished events).
//! Pure: no I/O.

use serde_json::Value;

use crate::config::Selection;
use crate::{BuildEvent, EventKind, ResultMode, SkipReason};

const SUCCESS: i64 = 0;
const WARNINGS: i64 = 1;
const FAILURE: i64 = 2;
const EXCEPTION: i64 = 4;
const CANCELLED: i64 = 6;

/// Why `event` is not pushed, or `None` when it is.
pub fn skip_reason(
    selection: &Selection,
    kind: EventKind,
    event: &BuildEvent,
) -> Option<SkipReason> {
    let selects = |list: &Option<Vec<String>>, value: Option<&str>| match list {
        None => true,
        Some(names) => value.is_some_and(|v| names.iter().any(|n| n == v)),
    };
    if !selects(&selection.builders, Some(&event.builder.name)) {
        return Some(SkipReason::Builder);
    }
    if !selects(
        &selection.schedulers,
        property_str(event, "scheduler").as_deref(),
    ) {
        return Some(SkipReason::Scheduler);
    }
    if !selects(
        &selection.branches,
        property_str(event, "branch").as_deref(),
    ) {
        return Some(SkipReason::Branch);
    }
    if let Some(tags) = &selection.tags {
        if !event.builder.tags.iter().any(|t| tags.contains(t)) {
            return Some(SkipReason::Tags);
        }
    }
    if kind == EventKind::Finished && !result_selected(&selection.mode, event) {
        return Some(SkipReason::Results);
    }
    None
}

/// A property whose value is a JSON string, as a Rust string.
fn property_str(event: &BuildEvent, name: &str) -> Option<String> {
    let p = event.properties.iter().find(|p| p.name == name)?;
    match serde_json::from_str::<Value>(&p.value).ok()? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Buildbot's `is_message_needed_by_results`, with an empty mode meaning `all`.
fn result_selected(mode: &[ResultMode], event: &BuildEvent) -> bool {
    if mode.is_empty() || mode.contains(&ResultMode::All) {
        return true;
    }
    let results = event.build.results;
    let previous = event.prev_build.as_ref().map(|b| b.results);
    mode.iter().any(|m| match m {
        ResultMode::All => true,
        ResultMode::Change => previous.is_some_and(|p| p != results),
        ResultMode::Failing => results == Some(FAILURE),
        ResultMode::Passing => results == Some(SUCCESS),
        ResultMode::Problem => {
            results == Some(FAILURE) && previous.is_some_and(|p| p != Some(FAILURE))
        }
        ResultMode::Warnings => results == Some(WARNINGS),
        ResultMode::Exception => results == Some(EXCEPTION),
        ResultMode::Cancelled => results == Some(CANCELLED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::event_from_json;
    use serde_json::json;

    fn event(results: Option<i64>, previous: Option<i64>) -> BuildEvent {
        let build = |results: Option<i64>| {
            json!({"buildid": 1, "number": 1, "builderid": 7,
            "buildrequestid": 1, "workerid": 1, "masterid": 1, "started_at": 1,
            "complete": true, "results": results})
        };
        let mut doc = json!({
            "build": build(results),
            "properties": {"branch": ["main", "Build"], "scheduler": ["nightly", "Scheduler"]},
            "buildrequest": {"buildrequestid": 1, "buildsetid": 1, "builderid": 7, "claimed": true,
                             "complete": false, "submitted_at": 1, "waited_for": false},
            "buildset": {"bsid": 1, "submitted_at": 1, "complete": false, "sourcestamps": []},
            "builder": {"builderid": 7, "name": "linux", "tags": ["fast", "os:linux"]},
        });
        if let Some(p) = previous {
            doc["prev_build"] = build(Some(p));
        }
        event_from_json(&doc).unwrap()
    }

    fn only(names: &[&str]) -> Option<Vec<String>> {
        Some(names.iter().map(|s| s.to_string()).collect())
    }

    fn skip(selection: Selection, kind: EventKind, e: &BuildEvent) -> Option<SkipReason> {
        skip_reason(&selection, kind, e)
    }

    #[test]
    fn default_selection_pushes_every_result() {
        for r in [0, 1, 2, 3, 4, 5, 6] {
            assert_eq!(
                skip(
                    Selection::default(),
                    EventKind::Finished,
                    &event(Some(r), None)
                ),
                None
            );
        }
    }

    #[test]
    fn property_filters_follow_buildbot() {
        let e = event(Some(0), None);
        let sel = |f: fn(&mut Selection)| {
            let mut s = Selection::default();
            f(&mut s);
            s
        };
        assert_eq!(
            skip(sel(|s| s.builders = only(&["mac"])), EventKind::Started, &e),
            Some(SkipReason::Builder)
        );
        assert_eq!(
            skip(
                sel(|s| s.builders = only(&["linux"])),
                EventKind::Started,
                &e
            ),
            None
        );
        assert_eq!(
            skip(sel(|s| s.branches = only(&["dev"])), EventKind::Started, &e),
            Some(SkipReason::Branch)
        );
        assert_eq!(
            skip(
                sel(|s| s.branches = only(&["main"])),
                EventKind::Started,
                &e
            ),
            None
        );
        assert_eq!(
            skip(
                sel(|s| s.schedulers = only(&["ci"])),
                EventKind::Started,
                &e
            ),
            Some(SkipReason::Scheduler)
        );
        assert_eq!(
            skip(
                sel(|s| s.schedulers = only(&["nightly"])),
                EventKind::Started,
                &e
            ),
            None
        );
        assert_eq!(
            skip(sel(|s| s.tags = only(&["slow"])), EventKind::Started, &e),
            Some(SkipReason::Tags)
        );
        assert_eq!(
            skip(
                sel(|s| s.tags = only(&["slow", "fast"])),
                EventKind::Started,
                &e
            ),
            None
        );
    }

    #[test]
    fn result_modes_follow_buildbot() {
        let mode = |m: &[ResultMode]| Selection {
            mode: m.to_vec(),
            ..Selection::default()
        };
        let pushed = |m: &[ResultMode], r: i64, prev: Option<i64>| {
            skip(mode(m), EventKind::Finished, &event(Some(r), prev)).is_none()
        };
        assert!(pushed(&[ResultMode::Failing], FAILURE, None));
        assert!(!pushed(&[ResultMode::Failing], SUCCESS, None));
        assert!(pushed(&[ResultMode::Passing], SUCCESS, None));
        assert!(pushed(&[ResultMode::Warnings], WARNINGS, None));
        assert!(pushed(&[ResultMode::Exception], EXCEPTION, None));
        assert!(pushed(&[ResultMode::Cancelled], CANCELLED, None));
        assert!(!pushed(&[ResultMode::Cancelled], EXCEPTION, None));
        assert!(pushed(&[ResultMode::Change], SUCCESS, Some(FAILURE)));
        assert!(!pushed(&[ResultMode::Change], SUCCESS, Some(SUCCESS)));
        assert!(!pushed(&[ResultMode::Change], SUCCESS, None));
        assert!(pushed(&[ResultMode::Problem], FAILURE, Some(SUCCESS)));
        assert!(!pushed(&[ResultMode::Problem], FAILURE, Some(FAILURE)));
        assert!(pushed(
            &[ResultMode::Passing, ResultMode::Failing],
            FAILURE,
            None
        ));
        assert!(pushed(&[ResultMode::All], EXCEPTION, None));
        // Started events carry no result yet, so a result mode never filters them.
        let started = skip(
            mode(&[ResultMode::Failing]),
            EventKind::Started,
            &event(None, None),
        );
        assert_eq!(started, None);
    }
}
