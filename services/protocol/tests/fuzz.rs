//! Property tests of the one decode step, for every message a service decodes:
//! arbitrary bytes, and valid messages with one field removed, retyped or given a
//! hostile value, decode to a valid value or to a `bad_request` that names the field;
//! nothing panics. `SHOAL_FUZZ_CASES` sets the cases per property (default 256).

use proptest::prelude::*;
use serde_json::{Value, json};
use shoal_protocol::ErrorCode;
use shoal_protocol::test_util::{decode_as, hostile_values, samples};

/// A hostile value, or any short string or integer.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(hostile_values()),
        ".{0,40}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

/// How a valid message is spoiled.
#[derive(Clone, Debug)]
enum Mutation {
    Remove,
    Replace(Value),
    /// An extra field the message does not define: still valid.
    Unknown(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Remove),
        hostile().prop_map(Mutation::Replace),
        hostile().prop_map(Mutation::Unknown),
    ]
}

fn cases() -> u32 {
    std::env::var("SHOAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic_and_fail_as_bad_request(
        which in 0..samples().len(),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let (name, _) = &samples()[which];
        if let Err(e) = decode_as(name, &bytes) {
            prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_fails_as_bad_request(
        which in 0..samples().len(),
        text in "[\\[\\]{}\",:0-9a-z. \\\\-]{0,64}",
    ) {
        let (name, _) = &samples()[which];
        if let Err(e) = decode_as(name, text.as_bytes()) {
            prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
        }
    }

    #[test]
    fn a_spoiled_field_is_refused_by_name_or_harmless(
        which in 0..samples().len(),
        field_pick in any::<prop::sample::Index>(),
        change in mutation(),
    ) {
        let (name, sample) = samples().swap_remove(which);
        let mut message = sample.clone();
        let object = message.as_object_mut().unwrap();
        let keys: Vec<String> = object.keys().cloned().collect();
        let field = match (&change, keys.is_empty()) {
            (Mutation::Unknown(_), _) | (_, true) => "zz_unknown".to_string(),
            _ => field_pick.get(&keys).clone(),
        };
        match change {
            Mutation::Remove => {
                object.remove(&field);
            }
            Mutation::Replace(v) | Mutation::Unknown(v) => {
                object.insert(field.clone(), v);
            }
        }
        let bytes = serde_json::to_vec(&message).unwrap();
        match decode_as(name, &bytes) {
            Ok(()) => {}
            Err(e) => {
                prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
                let named = e.details.as_ref().and_then(|d| d["field"].as_str()).unwrap_or("");
                prop_assert!(
                    e.message.contains(&field) || named.starts_with(&field),
                    "{name}: spoiling `{field}` gave {:?} (field {named:?}) for {message}",
                    e.message
                );
            }
        }
    }
}

#[test]
fn every_sample_is_valid() {
    for (name, sample) in samples() {
        let bytes = serde_json::to_vec(&sample).unwrap();
        assert!(decode_as(name, &bytes).is_ok(), "{name}: {sample}");
    }
}
