//! Assembles the stub guest (`stub/stub.S`) used by the VMM tests and
//! benchmarks into `$OUT_DIR/stub.elf`.

use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}); install gcc and binutils (apt-get install build-essential)")
    });
    assert!(status.success(), "{what} failed with {status}");
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("stub");
    let obj = out.join("stub.o");
    run(
        Command::new("gcc").args(["-c", "-nostdlib", "-fno-pic", "-o"]).arg(&obj).arg(dir.join("stub.S")),
        "gcc (assembling the stub guest)",
    );
    run(
        Command::new("ld")
            .args(["-m", "elf_x86_64", "--build-id=none", "-z", "noexecstack", "-z", "max-page-size=4096", "-T"])
            .arg(dir.join("stub.ld"))
            .arg("-o")
            .arg(out.join("stub.elf"))
            .arg(&obj),
        "ld (linking the stub guest)",
    );
    println!("cargo:rerun-if-changed=stub/stub.S");
    println!("cargo:rerun-if-changed=stub/stub.ld");
}
