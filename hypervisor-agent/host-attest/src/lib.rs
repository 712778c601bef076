//! Host attestation of the zone attestor: everything between a zone's boot
//! artifacts and the evidence a verifier checks.
//!
//! | module | concept |
//! |---|---|
//! | [`measure`] | measurement before boot: artifacts into sealed memfds, digests |
//! | [`cache`] | sealed artifacts kept by file identity, so a file is measured once |
//! | [`tpm`] | the host TPM (tss-esapi): EK, AK, PCR extend/read, quotes; the embedded swtpm |
//! | [`eventlog`] | the host's event log on disk (durable appends, torn-tail recovery) |
//! | [`index`] | which launch each logged event belongs to |
//! | [`ledger`] | the thread that keeps the log and the zone PCR in step and quotes |
//! | [`evidence`] | evidence assembly: one quote per batch, Merkle proofs, redacted logs (pure) |
//! | [`settings`] | the `[tpm]` settings |
//! | [`durable`] | atomic, durable file writes |
//!
//! It knows nothing of zones' processes or of the control API: the daemon
//! (`hypervisor-agent`) drives it.

pub mod cache;
pub mod durable;
pub mod eventlog;
pub mod evidence;
pub mod index;
pub mod ledger;
pub mod measure;
pub mod settings;
pub mod tpm;

pub use ledger::{Ledger, LedgerError, Snapshot};
pub use settings::TpmSettings;
