//! Support code for the integration and end-to-end tests and the boot
//! benchmark.
//!
//! | module | what |
//! |---|---|
//! | [`bench`] | the `zone-bench` probe's parsing and statistics |
//! | [`testhost`] | booting the QEMU test host and running scripts in it |

pub mod bench;
pub mod testhost;
