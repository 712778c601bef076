//! The host's event log on disk: `<state_dir>/eventlog/`.
//!
//! - `eventlog.bin`: the TCG crypto-agile log (`attestation_proto::eventlog`),
//!   appended to and fsynced **before** the matching PCR extend, so after a
//!   crash the log holds every extended event, plus at most one that was
//!   not extended yet (see `crate::ledger` for the reconciliation).
//! - `eventlog.json`: which TPM boot (reset count) and PCR the log belongs
//!   to. A log from an earlier boot is kept as `eventlog-<reset count>.bin`.
//!
//! A torn append (a crash inside `write`) leaves a partial last event; it
//! was never extended, and opening the store cuts it off.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use attestation_proto::eventlog::{self, Event, Limits};
use serde::{Deserialize, Serialize};

/// An event log that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// File system trouble.
    #[error("event log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a log this daemon wrote.
    #[error("event log {path} is unreadable ({detail}); move it away to start a new log (zones launched so far then cannot attest)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Which TPM boot and PCR a log belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    /// The TPM's reset count when the log was started.
    pub reset_count: u32,
    /// The PCR its events extend.
    pub pcr: u32,
}

/// The open log.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    file: File,
    events: Vec<Event>,
    bytes: Vec<u8>,
    meta: LogMeta,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// Limits for the host's own log: generous, still bounded.
pub fn limits() -> Limits {
    Limits::host_log()
}

impl LogStore {
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("eventlog.bin")
    }

    fn meta_path(dir: &Path) -> PathBuf {
        dir.join("eventlog.json")
    }

    /// Opens the log in `dir`, if there is one: its meta and events (a torn
    /// last event is cut off).
    pub fn open(dir: &Path) -> Result<Option<Self>, LogError> {
        let path = Self::log_path(dir);
        let meta_path = Self::meta_path(dir);
        if !path.exists() || !meta_path.exists() {
            return Ok(None);
        }
        let meta_bytes = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: LogMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| LogError::Corrupt { path: meta_path.clone(), detail: e.to_string() })?;
        let mut bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let scan = eventlog::scan(&bytes, &limits()).map_err(|e| LogError::Corrupt { path: path.clone(), detail: e.to_string() })?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        if let Some(e) = scan.tail_error {
            tracing::warn!(error = %e, kept = scan.events.len(), "cutting off a torn last event (it was never extended)");
            file.set_len(scan.complete_len as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            bytes.truncate(scan.complete_len);
        }
        Ok(Some(Self { dir: dir.to_owned(), file, events: scan.events, bytes, meta }))
    }

    /// Starts a new, empty log for `meta`, archiving an earlier one.
    pub fn create(dir: &Path, meta: LogMeta) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = Self::log_path(dir);
        let meta_path = Self::meta_path(dir);
        if let Some(old) = std::fs::read(&meta_path).ok().and_then(|b| serde_json::from_slice::<LogMeta>(&b).ok()) {
            let archive = dir.join(format!("eventlog-{}.bin", old.reset_count));
            if path.exists() {
                std::fs::rename(&path, &archive).map_err(io_err(&archive))?;
                tracing::info!(archive = %archive.display(), "archived the event log of an earlier TPM boot");
            }
        }
        let bytes = eventlog::header();
        crate::durable::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
        crate::durable::write_atomic(&meta_path, &serde_json::to_vec(&meta).unwrap_or_default(), 0o600)
            .map_err(io_err(&meta_path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        Ok(Self { dir: dir.to_owned(), file, events: Vec::new(), bytes, meta })
    }

    /// Appends one event and makes it durable.
    pub fn append(&mut self, event: &Event) -> Result<(), LogError> {
        let path = Self::log_path(&self.dir);
        let b = event.encode();
        let len = self.bytes.len() as u64;
        if let Err(e) = self.file.write_all(&b).and_then(|()| self.file.sync_data()) {
            // Leave no partial event behind for the next append to follow.
            let _ = self.file.set_len(len);
            return Err(LogError::Io { path, source: e });
        }
        self.bytes.extend_from_slice(&b);
        self.events.push(event.clone());
        Ok(())
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The whole log's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Which boot and PCR.
    pub fn meta(&self) -> LogMeta {
        self.meta
    }

    /// The value the log replays to.
    pub fn replay(&self) -> [u8; 32] {
        eventlog::replay(&self.events, self.meta.pcr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation_proto::eventlog::TAG_ZONE_LAUNCH;

    #[test]
    fn appends_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let meta = LogMeta { reset_count: 3, pcr: 15 };
        let mut log = LogStore::create(dir.path(), meta).unwrap();
        let e = Event::tagged(15, TAG_ZONE_LAUNCH, b"{}");
        log.append(&e).unwrap();
        log.append(&e).unwrap();
        let replay = log.replay();
        drop(log);
        let log = LogStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(log.events().len(), 2);
        assert_eq!(log.replay(), replay);
        assert_eq!(log.meta(), meta);
        // A torn append: half an event at the end.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("eventlog.bin")).unwrap();
        f.write_all(&e.encode()[..20]).unwrap();
        drop((f, log));
        let log = LogStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(log.events().len(), 2);
        assert_eq!(std::fs::read(dir.path().join("eventlog.bin")).unwrap(), log.bytes());
        // A new boot archives the old log.
        drop(log);
        let log = LogStore::create(dir.path(), LogMeta { reset_count: 4, pcr: 15 }).unwrap();
        assert!(log.events().is_empty());
        assert!(dir.path().join("eventlog-3.bin").exists());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        LogStore::create(dir.path(), LogMeta { reset_count: 1, pcr: 15 }).unwrap();
        std::fs::write(dir.path().join("eventlog.bin"), b"not a log").unwrap();
        let e = LogStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
