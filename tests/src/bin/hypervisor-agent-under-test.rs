//! The `hypervisor-agent` program, built inside the test crate so tests can
//! spawn the daemon (`CARGO_BIN_EXE_hypervisor-agent-under-test`).

fn main() {
    hypervisor_agent::agent::main()
}
