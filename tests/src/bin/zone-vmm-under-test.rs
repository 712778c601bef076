//! The `zone-vmm` program with its test hooks, built inside the test crate so
//! the daemon under test can start it (`CARGO_BIN_EXE_zone-vmm-under-test`).

fn main() {
    zone_vmm::process::main()
}
