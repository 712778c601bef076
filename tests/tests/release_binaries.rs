//! The release binaries that scripts/build.sh makes (test.sh runs it first)
//! carry no test hook: fault injection, the pause after measurement and the
//! jail probes exist only in the `-under-test` builds.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn release_binaries_have_no_test_hooks_and_test_builds_do() {
    let hooks = ["HYPERVISOR_AGENT_FAULT", "HYPERVISOR_AGENT_PAUSE_AFTER_MEASURE_MS", "HYPERVISOR_AGENT_VMM_PROBE", "test hook:"];
    let release = [
        root().join("target/release/hypervisor-agent"),
        root().join("target/x86_64-unknown-linux-gnu/release/zone-vmm"),
    ];
    let test_builds = [
        (root().join("target/release/hypervisor-agent-under-test"), "HYPERVISOR_AGENT_FAULT"),
        (root().join("target/x86_64-unknown-linux-gnu/release/zone-vmm-under-test"), "test hook:"),
    ];
    for path in &release {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build.sh (scripts/test.sh does)", path.display()));
        for h in hooks {
            assert!(!contains(&bytes, h), "the release binary {} contains the test hook {h:?}", path.display());
        }
    }
    for (path, hook) in &test_builds {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build.sh (scripts/test.sh does)", path.display()));
        assert!(contains(&bytes, hook), "the test build {} lacks its hooks ({hook:?}): this check would prove nothing", path.display());
    }
}
