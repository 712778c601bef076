//! Support code for the integration and end-to-end tests and the boot
//! benchmark.
//!
//! | module | what |
//! |---|---|
//! | [`bench`] | the `zone-bench` probe's parsing and statistics |
//! | [`testhost`] | booting the QEMU test host and running scripts in it |
//! | [`plugin`] | starting a SPIRE plugin binary as spire-server does |
//! | [`oci`] | OCI image archives built from a description (the image tests, `oci-fixture`) |
//! | [`token_service`] | a registry token service (Docker's token protocol) for the pull tests |

pub mod bench;
pub mod oci;
#[cfg(feature = "under-test")]
pub mod plugin;
pub mod testhost;
#[cfg(feature = "under-test")]
pub mod token_service;

/// A free loopback port whose successor is free too (swtpm's server and
/// control ports), or None after 100 tries.
pub fn free_port_pair() -> Option<u16> {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let p = l.local_addr().ok()?.port();
        if p < u16::MAX - 1 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Some(p);
        }
    }
    None
}
