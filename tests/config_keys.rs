//! One source for the configuration's keys: the WIT `config` record, whose every field's
//! documentation names its JSON key(s) in its first parenthesis (`(`serverUrl`)`), and
//! `documents::CONFIG_KEYS`, the list `parse-config` accepts. This test holds each to
//! the other; the host's `Config` is held to the WIT by the compiler (its conversions
//! name every field), and the Buildbot plugin's options by its own tests, against the
//! same list exported by its native module.

use std::collections::BTreeSet;
use std::path::Path;

use status_push::documents::{CONFIG_KEYS, RELAY_ONLY_KEYS};

/// `(field, docs)` of every field of the WIT's `config` record.
fn wit_config_fields() -> Vec<(String, String)> {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
    resolve.push_dir(&wit).expect("wit/ parses");
    let config = resolve
        .types
        .iter()
        .find(|(_, t)| {
            t.name.as_deref() == Some("config")
                && matches!(t.owner, wit_parser::TypeOwner::Interface(i)
                    if resolve.interfaces[i].name.as_deref() == Some("reporter"))
        })
        .map(|(_, t)| t)
        .expect("the reporter interface has a `config` record");
    let wit_parser::TypeDefKind::Record(record) = &config.kind else {
        panic!("`config` is a record");
    };
    record
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.docs.contents.clone().unwrap_or_default()))
        .collect()
}

/// The backticked names in the first parenthesis of `docs`.
fn named_keys(docs: &str) -> Vec<String> {
    let Some(start) = docs.find('(') else {
        return vec![];
    };
    let inside = &docs[start + 1..docs[start..].find(')').map_or(docs.len(), |e| start + e)];
    inside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_wit_config_field_names_its_json_keys_and_every_key_has_a_field() {
    let mut named = Vec::new();
    let mut relay_only = BTreeSet::new();
    for (field, docs) in wit_config_fields() {
        let keys = named_keys(&docs);
        assert!(
            !keys.is_empty(),
            "the WIT's config.{field} names no JSON key in its docs' first parenthesis"
        );
        if docs.starts_with("Relay world only") {
            relay_only.extend(keys.iter().cloned());
        }
        named.extend(keys);
    }
    let unique: BTreeSet<&str> = named.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), named.len(), "a key is named twice: {named:?}");
    let accepted: BTreeSet<&str> = CONFIG_KEYS.into_iter().collect();
    assert_eq!(
        unique, accepted,
        "the WIT's config record and documents::CONFIG_KEYS disagree"
    );
    let relay_only_keys: BTreeSet<String> = RELAY_ONLY_KEYS.into_iter().map(String::from).collect();
    assert_eq!(relay_only, relay_only_keys);
}

#[test]
fn named_keys_are_read_from_the_first_parenthesis() {
    assert_eq!(
        named_keys("Sign each request (`signingScheme` + `signingSecret`). Uses `x`."),
        ["signingScheme", "signingSecret"]
    );
    assert_eq!(
        named_keys("Basic-auth password (`password`); needs `user`."),
        ["password"]
    );
    assert!(named_keys("No key here.").is_empty());
}
