//! Writes the OCI image archive the test host's image tests import
//! (`zone_tests::oci::testhost_image`): `oci-fixture BUSYBOX OUT`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [busybox, out] = args.as_slice() else {
        eprintln!("usage: oci-fixture BUSYBOX OUT (a static busybox; where to write the archive)");
        std::process::exit(2);
    };
    let bb = std::fs::read(busybox).unwrap_or_else(|e| {
        eprintln!("oci-fixture: cannot read {busybox}: {e}");
        std::process::exit(1)
    });
    let img = zone_tests::oci::testhost_image(&bb);
    if let Err(e) = std::fs::write(out, img.archive()) {
        eprintln!("oci-fixture: cannot write {out}: {e}");
        std::process::exit(1);
    }
    println!("{}", img.manifest_digest());
}
