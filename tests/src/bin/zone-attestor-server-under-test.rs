//! The server-side SPIRE plugin, built inside the test crate so tests can
//! start it (`CARGO_BIN_EXE_zone-attestor-server-under-test`).

fn main() {
    std::process::exit(spire_plugin::server_main());
}
