//! The `zonectl` program, built inside the test crate so integration tests can
//! spawn it as a child process (`CARGO_BIN_EXE_zonectl-under-test`).

fn main() {
    zonectl::cli::main()
}
