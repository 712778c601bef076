//! The policy file: any UTF-8 text is either refused with an error or gives
//! a policy whose TOML parses back to the same policy; checking a launch
//! record against it (zone-name globs included) never panics.
#![no_main]

use attestation_proto::policy::{Policy, glob_match};
use attestation_proto_fuzz::default_scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = Policy::parse(text) {
        assert_eq!(Policy::parse(&p.to_toml()).as_ref(), Ok(&p));
        let mut record = default_scenario().record.record();
        let _ = p.check(&record);
        for rule in &p.allow {
            record.zone.clone_from(&rule.name);
            // A pattern matches itself (`*` matches the run "*").
            assert!(glob_match(&rule.name, &rule.name));
            let _ = p.check(&record);
        }
    }
    // The glob on the halves of the text.
    let mid = text.len() / 2;
    if text.is_char_boundary(mid) {
        let (pattern, name) = text.split_at(mid);
        let _ = glob_match(pattern, name);
    }
});
