//! Image zones in the test host (real KVM, the zone kernel's dm-verity):
//! `zonectl image import` of an OCI archive, then zones whose command runs in
//! the image's root — its entrypoint, cmd, environment, working directory
//! and user; what its layers removed is gone, what they added is there; the
//! root is read-only underneath and writable through the overlay. The
//! conversion in the test host gives the same bytes and verity root as on
//! this machine. A single byte flipped in the root disk makes the read of
//! that block fail (EIO) with a dm-verity error on the console, and the
//! launch record names the image and its verity root.

use sha2::Digest;
use zone_tests::testhost::{self, BASE_IMAGE, KERNEL, daemon_prelude as setup};
use zonectl::image::oci::layers::Limits;
use zonectl::image::oci::store::Store;
use zonectl::image::oci::{Quiet, import};

const ARCHIVE: &str = "/opt/zone/images/oci-test.tar";

#[test]
fn image_zones_run_the_image_and_a_flipped_byte_fails_the_read() {
    // The same conversion here: where big.bin's bytes sit in the root disk.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("oci-test.tar");
    let big = zone_tests::oci::big_bin();
    std::fs::write(&archive, zone_tests::oci::testhost_image(&std::fs::read("/bin/busybox").unwrap()).archive()).unwrap();
    let store = Store::new(dir.path().join("store"));
    let (rec, _) = import(&archive, None, &store, Limits::default(), &mut Quiet).unwrap();
    let rootfs = std::fs::read(store.rootfs(&rec).unwrap()).unwrap();
    let needle = &big[600_000..600_064];
    let offset = rootfs.windows(needle.len()).position(|w| w == needle).expect("big.bin is stored uncompressed in the root");
    let big_sha = hex::encode(sha2::Sha256::digest(&big));
    let hex = rec.digest.trim_start_matches("sha256:").to_owned();

    let run = testhost::run(&format!(
        r#"{setup}
export ZONE_IMAGE_STORE=/var/lib/za/images
zonectl image import {ARCHIVE} > /tmp/import.out 2> /tmp/import.err
echo "import_rc=$?"
sed 's/^/import: /' /tmp/import.out /tmp/import.err
echo "imported_digest=$(zonectl image ls -o json | grep '"digest"' | head -n 1 | sed 's/.*: //; s/[",]//g')"
echo "imported_root=$(zonectl image ls -o json | grep '"root"' | head -n 1 | sed 's/.*: //; s/[",]//g')"
echo "progress_lines=$(grep -c 'layer [12]/2' /tmp/import.err)"

# The image's own entrypoint + cmd, env, workdir and user.
zonectl launch web --image zone-test:1 --wait-timeout 600 > /tmp/web.out 2>&1
echo "web_launch_rc=$?"
cat /tmp/web.out | sed 's/^/web launch: /'
wait_state web stopped
echo "web_state=$(field web state)"
echo "web_exit=$(field web exit_status)"
zonectl logs web > /tmp/web.log 2>&1
sed 's/^/web: /' /tmp/web.log
zonectl logs web --console | tail -n 20 | sed 's/^/web console: /'
for k in uid pwd greeting; do echo "web_$k=$(grep "^$k=" /tmp/web.log | head -n 1 | cut -d= -f2- | cut -d' ' -f1-4)"; done
echo "web_cmd_ran=$(grep -c image-cmd-ran /tmp/web.log)"
echo "web_data=$(grep -c image-data-v1 /tmp/web.log)"
zonectl inspect web -o json > /tmp/web.json
echo "record_has_image=$(grep -c '"image": "sha256:{hex}"' /tmp/web.json)"
echo "cmdline_has_verity=$(grep -c 'dm-mod.create' /tmp/web.json)"

# Arguments after -- replace the cmd; the layers' work is visible; the overlay takes writes.
zonectl launch probe --image zone-test:1 --wait-timeout 600 -- 'test -e /old && echo whiteout=bad || echo whiteout=ok; test -e /cfg/lower.txt && echo opaque=bad || echo opaque=ok; echo upper=$(cat /cfg/upper.txt); echo link=$(cat /app/data-link.txt); echo motd=$(cat /etc/motd); echo big=$(sha256sum /app/big.bin | cut -c1-64); echo written > /tmp/new.txt && echo overlay_write=$(cat /tmp/new.txt)' > /dev/null 2>&1
wait_state probe stopped
zonectl logs probe > /tmp/probe.log 2>&1
sed 's/^/probe: /' /tmp/probe.log
for k in whiteout opaque upper link motd big overlay_write; do echo "probe_$k=$(grep "^$k=" /tmp/probe.log | head -n 1 | cut -d= -f2-)"; done
echo "probe_exit=$(field probe exit_status)"

# Attestation: a policy computed offline from the archive admits the running
# image zone; one naming another image refuses it, saying so.
ak=$(zonectl eventlog -o json | sed -n 's/.*"trust_entry": "\([^"]*\)".*/\1/p')
zonectl launch svc --image zone-test:1 --wait-timeout 600 -- 'sleep 100000' > /dev/null 2>&1
echo "svc_state=$(field svc state)"
zonectl measure --kernel {KERNEL} --initrd {BASE_IMAGE} --image {ARCHIVE} --policy svc -- 'sleep 100000' > /tmp/svc.policy 2> /tmp/measure.err
echo "measure_rc=$?"
sed 's/^/measure: /' /tmp/svc.policy /tmp/measure.err
echo "policy_names_image=$(grep -c '{hex}' /tmp/svc.policy)"
echo "policy_names_root=$(grep -c '{root}' /tmp/svc.policy)"
echo "suggest_names_image=$(zonectl policy suggest svc | grep -c '{hex}')"
sed 's/{hex}/{zeros}/' /tmp/svc.policy > /tmp/other.policy
nonce=$(busybox head -c 32 /dev/urandom | busybox xxd -p -c 64)
zonectl evidence svc --nonce $nonce --out /tmp/svc.ev > /dev/null 2>&1
echo "svc_verify=$(zonectl verify /tmp/svc.ev --nonce $nonce --policy /tmp/svc.policy --trust-ak "$ak" -o json 2>&1 | tr -d '\n ')"
echo "other_verify=$(zonectl verify /tmp/svc.ev --nonce $nonce --policy /tmp/other.policy --trust-ak "$ak" -o json 2>&1 | tr -d '\n ')"

# One byte of big.bin flipped on the disk: the read fails, dm-verity says why.
img=/var/lib/za/images/images/{hex}/rootfs.img
dd if=$img bs=1 skip={offset} count=1 2>/dev/null | od -An -tu1 > /tmp/byte
b=$(tr -d ' \n' < /tmp/byte)
printf "\\$(printf '%03o' $(( (b + 1) % 256 )))" | dd of=$img bs=1 seek={offset} count=1 conv=notrunc 2>/dev/null
echo "flipped=$(dd if=$img bs=1 skip={offset} count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')_from_$b"
zonectl launch bad --image zone-test:1 --wait-timeout 600 -- 'sha256sum /app/big.bin; echo read_rc=$?' > /dev/null 2>&1
wait_state bad stopped
zonectl logs bad > /tmp/bad.log 2>&1
sed 's/^/bad: /' /tmp/bad.log
echo "bad_read_rc=$(grep '^read_rc=' /tmp/bad.log | cut -d= -f2)"
echo "bad_big_ok=$(grep -c {big_sha} /tmp/bad.log)"
echo "bad_io_error=$(grep -ci 'error' /tmp/bad.log)"
zonectl logs bad --console > /tmp/bad.console 2>&1
grep -i verity /tmp/bad.console | head -n 3 | sed 's/^/bad console: /'
echo "verity_error=$(grep -ci 'verity.*corrupted' /tmp/bad.console)"
"#,
        setup = setup(),
        root = rec.verity.root,
        zeros = "0".repeat(64),
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("import_rc"), "0", "{}", run.output);
    assert_eq!(v("imported_digest"), rec.digest, "the archive's manifest");
    assert_eq!(v("imported_root"), rec.verity.root, "the same verity root as on this machine: the conversion is reproducible");
    assert_eq!(v("progress_lines"), "2", "a progress line per layer");
    assert_eq!(v("web_launch_rc"), "0", "{}", run.output);
    assert_eq!(v("web_state"), "stopped", "{}", run.output);
    assert_eq!(v("web_exit"), "0", "{}", run.output);
    assert_eq!(v("web_cmd_ran"), "1", "the image's entrypoint and cmd ran:\n{}", run.output);
    assert_eq!(v("web_uid"), "1000 gid=1000", "as the image's user");
    assert_eq!(v("web_pwd"), "/app", "in its working directory");
    assert_eq!(v("web_greeting"), "hello from the image", "with its environment");
    assert_eq!(v("web_data"), "1", "reading a file of the image");
    assert_eq!(v("record_has_image"), "1", "the launch record names the image:\n{}", run.output);
    assert_eq!(v("cmdline_has_verity"), "1");
    assert_eq!(v("probe_whiteout"), "ok", "{}", run.output);
    assert_eq!(v("probe_opaque"), "ok");
    assert_eq!(v("probe_upper"), "from the upper layer");
    assert_eq!(v("probe_link"), "image-data-v1");
    assert_eq!(v("probe_motd"), "layer-two");
    assert_eq!(v("probe_big"), big_sha, "1 MiB read through virtio-blk and dm-verity intact");
    assert_eq!(v("probe_overlay_write"), "written");
    assert_eq!(v("probe_exit"), "0");
    assert_eq!(v("svc_state"), "running", "{}", run.output);
    assert_eq!(v("measure_rc"), "0", "{}", run.output);
    assert_eq!(v("policy_names_image"), "1", "zonectl measure --image names the image:\n{}", run.output);
    assert_eq!(v("policy_names_root"), "1", "and its verity root");
    assert_eq!(v("suggest_names_image"), "1", "zonectl policy suggest names the image");
    let j: serde_json::Value = serde_json::from_str(&v("svc_verify")).unwrap_or_else(|e| panic!("{e}: {}", run.output));
    assert_eq!(j["verified"], true, "the offline policy admits the image zone: {j}\n{}", run.output);
    assert_eq!(j["image_sha256"], hex, "the evidence carries the image");
    assert_eq!(j["rootfs_verity"], rec.verity.root, "and its verity root");
    let j: serde_json::Value = serde_json::from_str(&v("other_verify")).unwrap_or_else(|e| panic!("{e}: {}", run.output));
    assert_eq!(j["check"], "policy", "{j}");
    assert!(j.to_string().contains("image"), "the rejection names the image: {j}");
    assert!(v("flipped").contains("_from_"), "{}", run.output);
    assert_ne!(v("bad_read_rc"), "0", "the corrupted block cannot be read:\n{}", run.output);
    assert_eq!(v("bad_big_ok"), "0", "no intact digest of the corrupted file");
    assert!(v("verity_error").parse::<u32>().unwrap() >= 1, "dm-verity names the corrupted block:\n{}", run.output);
}
