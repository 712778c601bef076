//! Attestation in the test host (real KVM, the real TPM device
//! `/dev/tpmrm0`): zones ask for evidence over their vsock host channel and
//! it verifies, each about itself only; a file replaced after measurement
//! does not change what boots; a daemon killed at each step between log
//! append and PCR extend reconciles at restart.

use zone_tests::testhost::{self, BASE_IMAGE, SHELL_IMAGE, daemon_prelude};

/// Script helpers: `verify_ev FILE NONCE POLICY` prints `zonectl verify -o json`
/// (with the daemon's AK pinned) on one line; `evidence_of ZONE FILE` decodes
/// the base64 evidence a zone printed between markers into FILE.
const HELPERS: &str = r#"
ak=$(zonectl eventlog -o json | sed -n 's/.*"trust_entry": "\([^"]*\)".*/\1/p')
verify_ev() { zonectl verify "$1" --nonce "$2" --policy "$3" --trust-ak "$ak" -o json 2>&1 | tr -d '\n '; echo; }
evidence_of() {
  for i in $(seq 600); do zonectl logs "$1" 2>/dev/null | grep -q EVIDENCE-END && break; sleep 0.5; done
  zonectl logs "$1" | sed -n '/EVIDENCE-BEGIN/,/EVIDENCE-END/p' | grep -v EVIDENCE | busybox base64 -d > "$2"
}
alive() { [ -d /proc/$1 ] && ! grep -q '^State:.*Z' /proc/$1/status; }
"#;

#[test]
fn zones_ask_for_evidence_over_vsock_and_each_learns_only_about_itself() {
    let run = testhost::run(&format!(
        r#"{prelude}{HELPERS}
echo "ak=$ak"
n_alpha=$(busybox head -c 32 /dev/urandom | busybox xxd -p -c 64)
n_beta=$(busybox head -c 32 /dev/urandom | busybox xxd -p -c 64)
# Each zone asks for evidence for its nonce, prints it, and keeps running.
ask() {{
  echo "zone-guest evidence --nonce $1 --out /tmp/ev; echo evidence_rc=\$?; echo EVIDENCE-BEGIN; /bin/busybox base64 /tmp/ev; echo EVIDENCE-END; zone-guest evidence --nonce 0011; echo short_nonce_rc=\$?; exec /bin/sleep 100000"
}}
zonectl launch alpha --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/sh -c "$(ask $n_alpha)" > /tmp/alpha.out 2>&1 || cat /tmp/alpha.out
zonectl launch beta --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/sh -c "$(ask $n_beta)" > /tmp/beta.out 2>&1 || cat /tmp/beta.out
evidence_of alpha /tmp/alpha.ev
evidence_of beta /tmp/beta.ev
zonectl logs alpha | grep -v '^[A-Za-z0-9+/=]*$' | head -n 20
echo "alpha_rc=$(zonectl logs alpha | sed -n 's/^evidence_rc=//p')"
# The short-nonce line follows the evidence; wait for it rather than race it.
for i in $(seq 600); do zonectl logs alpha | grep -q '^short_nonce_rc=' && break; sleep 0.5; done
echo "alpha_short_nonce_rc=$(zonectl logs alpha | sed -n 's/^short_nonce_rc=//p')"
echo "alpha_bytes=$(wc -c < /tmp/alpha.ev)"
zonectl policy suggest alpha > /tmp/alpha.policy
zonectl policy suggest beta > /tmp/beta.policy
echo "alpha_verify=$(verify_ev /tmp/alpha.ev $n_alpha /tmp/alpha.policy)"
echo "beta_verify=$(verify_ev /tmp/beta.ev $n_beta /tmp/beta.policy)"
# alpha's evidence presented for beta's challenge, or against beta's policy.
echo "alpha_for_beta_nonce=$(verify_ev /tmp/alpha.ev $n_beta /tmp/beta.policy)"
echo "alpha_under_beta_policy=$(verify_ev /tmp/alpha.ev $n_alpha /tmp/beta.policy)"
echo "beta_in_alpha_evidence=$(busybox grep -c beta /tmp/alpha.ev)"
echo "alpha_in_beta_evidence=$(busybox grep -c alpha /tmp/beta.ev)"
# The daemon answers the zone's own channel only while the zone runs.
zonectl stop alpha > /dev/null 2>&1
echo "stopped_evidence_rc=$(zonectl evidence alpha --nonce $n_alpha --out /tmp/x.ev > /dev/null 2>&1; echo $?)"
"#,
        prelude = daemon_prelude()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("alpha_rc"), "0", "zone-guest evidence failed in the zone:\n{}", run.output);
    assert_eq!(v("alpha_short_nonce_rc"), "2", "a short nonce is a usage error");
    assert!(v("alpha_bytes").parse::<usize>().unwrap() > 500, "{}", run.output);
    let ok = |k: &str, zone: &str| {
        let j: serde_json::Value = serde_json::from_str(&v(k)).unwrap_or_else(|e| panic!("{k}: {e}: {}", run.output));
        assert_eq!(j["verified"], true, "{k}: {j}\n{}", run.output);
        assert_eq!(j["zone"], zone, "{k}: {j}");
        assert_eq!(j["host"], "testhost", "{k}: {j}");
    };
    ok("alpha_verify", "alpha");
    ok("beta_verify", "beta");
    let rejected = |k: &str| -> serde_json::Value { serde_json::from_str(&v(k)).unwrap_or_else(|e| panic!("{k}: {e}: {}", run.output)) };
    assert_eq!(rejected("alpha_for_beta_nonce")["check"], "freshness", "{}", run.output);
    assert_eq!(rejected("alpha_under_beta_policy")["check"], "policy", "{}", run.output);
    assert_eq!(v("beta_in_alpha_evidence"), "0", "beta's record leaked into alpha's evidence");
    assert_eq!(v("alpha_in_beta_evidence"), "0", "alpha's record leaked into beta's evidence");
    assert_ne!(v("stopped_evidence_rc"), "0", "a stopped zone has no evidence");
}

#[test]
fn on_the_real_tpm_device_measured_bytes_boot_and_crashes_reconcile() {
    // The daemon and VMM built with their test hooks (pause after measurement, fault injection).
    let run = testhost::run(&format!(
        r#"export PATH=/opt/zone/test-bin:$PATH
{prelude}{HELPERS}
restart_daemon() {{
  pid=$(cat /tmp/daemon.pid); kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  start_daemon
}}

# TOCTOU: the initrd is replaced (by one without a shell) right after measurement.
cp {SHELL_IMAGE} /tmp/img.cpio
want=$(busybox sha256sum /tmp/img.cpio | cut -d' ' -f1)
export HYPERVISOR_AGENT_PAUSE_AFTER_MEASURE_MS=4000
restart_daemon
unset HYPERVISOR_AGENT_PAUSE_AFTER_MEASURE_MS
zonectl launch toctou --initrd /tmp/img.cpio --no-wait -- /bin/sh -c 'echo measured-image-ran' > /tmp/toctou.out 2>&1 &
for i in $(seq 600); do grep -q 'pausing after measurement' /tmp/daemon.log && break; sleep 0.1; done
cp {BASE_IMAGE} /tmp/img.cpio
echo "replaced_hash_differs=$(test "$(busybox sha256sum /tmp/img.cpio | cut -d' ' -f1)" != "$want" && echo yes)"
wait $!
wait_state toctou stopped
echo "toctou_exit=$(field toctou exit_status)"
echo "toctou_ran=$(zonectl logs toctou | grep -c measured-image-ran)"
echo "toctou_measured=$(zonectl inspect toctou -o json | grep -c $want)"

# Crash consistency: the daemon aborts at each step of recording a launch.
for p in before-append after-append after-extend; do
  export HYPERVISOR_AGENT_FAULT=$p
  restart_daemon
  pid=$(cat /tmp/daemon.pid)
  zonectl launch victim-$p --no-wait > /dev/null 2>&1
  for i in $(seq 600); do alive $pid || break; sleep 0.1; done
  echo "aborted_$p=$(alive $pid && echo no || echo yes)"
  unset HYPERVISOR_AGENT_FAULT
  restart_daemon
  zonectl eventlog -o json > /tmp/log-$p.json
  echo "replays_$p=$(grep -c '"replays_to_pcr": true' /tmp/log-$p.json)"
  echo "victim_events_$p=$(grep -c "\"zone\": \"victim-$p\"" /tmp/log-$p.json)"
done

# After all that, a new zone's evidence from the real TPM verifies.
zonectl launch after --wait-timeout 600 > /dev/null 2>&1
nonce=$(busybox head -c 16 /dev/urandom | busybox xxd -p)
zonectl evidence after --nonce $nonce --out /tmp/after.ev > /dev/null
zonectl policy suggest after > /tmp/after.policy
echo "after_verify=$(verify_ev /tmp/after.ev $nonce /tmp/after.policy)"
echo "tpm_device=$(zonectl eventlog -o json | sed -n 's/.*"tpm": "\(.*\)".*/\1/p')"
"#,
        prelude = daemon_prelude()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("replaced_hash_differs"), "yes");
    assert_eq!(v("toctou_exit"), "0", "the zone did not run the measured image:\n{}", run.output);
    assert_eq!(v("toctou_ran"), "1");
    assert!(v("toctou_measured").parse::<u32>().unwrap() >= 1, "the record holds the original image's digest");
    for p in ["before-append", "after-append", "after-extend"] {
        assert_eq!(v(&format!("aborted_{p}")), "yes", "the fault at {p} did not abort the daemon:\n{}", run.output);
        assert_eq!(v(&format!("replays_{p}")), "1", "{p}: the log does not replay to the PCR:\n{}", run.output);
        // Not logged at all, or logged, completed and closed with a stop.
        let want = if p == "before-append" { "0" } else { "2" };
        assert_eq!(v(&format!("victim_events_{p}")), want, "{p}:\n{}", run.output);
    }
    let j: serde_json::Value = serde_json::from_str(&v("after_verify")).unwrap_or_else(|e| panic!("{e}: {}", run.output));
    assert_eq!(j["verified"], true, "{j}\n{}", run.output);
    assert!(v("tpm_device").contains("/dev/tpmrm0"), "the daemon used {} instead of the TPM device", v("tpm_device"));
}
