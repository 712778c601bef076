//! The host's event log on disk: `<state_dir>/eventlog/`.
//!
//! - `eventlog.bin`: the TCG crypto-agile log (`attestation_proto::eventlog`),
//!   appended to and fsynced **before** the matching PCR extend, so after a
//!   crash the log holds every extended event, plus at most the ones that
//!   were not extended yet (see `crate::ledger` for the reconciliation).
//! - `intent.bin`: the exact bytes of the events about to be appended,
//!   written (and fsynced) before them and removed once they are extended.
//!   An interrupted extend is completed only for events that match the
//!   intent byte for byte: an event that someone else appended to the file
//!   is never extended into the PCR.
//! - `eventlog.json`: which TPM boot (reset count) and PCR the log belongs
//!   to. A log from an earlier boot is kept as `eventlog-<reset count>.bin`
//!   (never overwriting an earlier archive).
//! - `checkpoint.json`: the latest checkpoint's quote (`crate::ledger`).
//!
//! A torn append (a crash inside `write`) leaves a short, incomplete last
//! event; it was never extended, and opening the store cuts it off. Nothing
//! else is ever cut: a log that does not parse anywhere else, or ends in an
//! event that is complete but malformed, stops the daemon with a message and
//! stays as it is on disk.
//!
//! The store keeps no events in memory: the ledger keeps what it needs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use attestation_proto::eventlog::{self, Event, EventLogError, Limits};
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
    /// The file is not a log this daemon wrote, or was altered.
    #[error(
        "event log {path} is unreadable ({detail}); it was left as it is. Move it away to start a new log \
         (zones launched so far then cannot attest)"
    )]
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
    len: u64,
    meta: LogMeta,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// Limits for the host's own log: generous, still bounded.
pub fn limits() -> Limits {
    Limits::host_log()
}

/// The longest an incomplete last event can be (a torn append of one event).
fn max_event_len() -> usize {
    50 + limits().max_event_data
}

impl LogStore {
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("eventlog.bin")
    }

    fn meta_path(dir: &Path) -> PathBuf {
        dir.join("eventlog.json")
    }

    fn intent_path(dir: &Path) -> PathBuf {
        dir.join("intent.bin")
    }

    /// Opens the log in `dir`, if there is one: the store and the log's
    /// events (a torn last event is cut off; any other defect is an error
    /// and the file is left untouched).
    pub fn open(dir: &Path) -> Result<Option<(Self, Vec<Event>)>, LogError> {
        let path = Self::log_path(dir);
        let meta_path = Self::meta_path(dir);
        if !path.exists() || !meta_path.exists() {
            return Ok(None);
        }
        let meta_bytes = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: LogMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| LogError::Corrupt { path: meta_path.clone(), detail: e.to_string() })?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let corrupt = |detail: String| LogError::Corrupt { path: path.clone(), detail };
        let scan = eventlog::scan(&bytes, &limits()).map_err(|e| corrupt(e.to_string()))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        let mut len = bytes.len() as u64;
        if let Some(e) = scan.tail_error {
            let rest = bytes.len() - scan.complete_len;
            // Only a short, incomplete last event is a torn append.
            if !matches!(e, EventLogError::Truncated { .. }) || rest >= max_event_len() {
                return Err(corrupt(format!(
                    "{e} after {} complete events ({rest} bytes at the end that are not a torn append)",
                    scan.events.len()
                )));
            }
            tracing::warn!(error = %e, kept = scan.events.len(), bytes = rest, "cutting off a torn last event (it was never extended)");
            file.set_len(scan.complete_len as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            len = scan.complete_len as u64;
        }
        Ok(Some((Self { dir: dir.to_owned(), file, len, meta }, scan.events)))
    }

    /// Starts a new, empty log for `meta`, archiving an earlier one under a
    /// name no earlier archive has.
    pub fn create(dir: &Path, meta: LogMeta) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = Self::log_path(dir);
        let meta_path = Self::meta_path(dir);
        if path.exists() {
            let old = std::fs::read(&meta_path).ok().and_then(|b| serde_json::from_slice::<LogMeta>(&b).ok());
            let stem = old.map_or_else(|| "eventlog-unknown".to_owned(), |m| format!("eventlog-{}", m.reset_count));
            let archive = (0..)
                .map(|n| if n == 0 { dir.join(format!("{stem}.bin")) } else { dir.join(format!("{stem}.{n}.bin")) })
                .find(|p| !p.exists())
                .unwrap_or_else(|| dir.join(format!("{stem}.last.bin")));
            std::fs::rename(&path, &archive).map_err(io_err(&archive))?;
            tracing::info!(archive = %archive.display(), "archived the event log of an earlier TPM boot");
        }
        for stale in [Self::intent_path(dir), dir.join("checkpoint.json")] {
            let _ = std::fs::remove_file(stale);
        }
        let bytes = eventlog::header();
        crate::durable::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
        crate::durable::write_atomic(&meta_path, &serde_json::to_vec(&meta).unwrap_or_default(), 0o600)
            .map_err(io_err(&meta_path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        Ok(Self { dir: dir.to_owned(), file, len: bytes.len() as u64, meta })
    }

    /// Records the intent to append `events` (durably, before appending them).
    pub fn write_intent(&self, events: &[Event]) -> Result<(), LogError> {
        let path = Self::intent_path(&self.dir);
        let bytes: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        crate::durable::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))
    }

    /// The intent recorded before the last append, if any.
    pub fn intent(&self) -> Result<Option<Vec<u8>>, LogError> {
        let path = Self::intent_path(&self.dir);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes the intent (its events are extended).
    pub fn clear_intent(&self) {
        let _ = std::fs::remove_file(Self::intent_path(&self.dir));
    }

    /// Appends `events` and makes them durable (one fsync for all).
    pub fn append(&mut self, events: &[Event]) -> Result<(), LogError> {
        let path = Self::log_path(&self.dir);
        let b: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        if let Err(e) = self.file.write_all(&b).and_then(|()| self.file.sync_data()) {
            // Leave no partial event behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            return Err(LogError::Io { path, source: e });
        }
        self.len += b.len() as u64;
        Ok(())
    }

    /// The whole log's bytes, read from disk.
    pub fn read_all(&self) -> Result<Vec<u8>, LogError> {
        let path = Self::log_path(&self.dir);
        std::fs::read(&path).map_err(io_err(&path))
    }

    /// The log's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds only its header.
    pub fn is_empty(&self) -> bool {
        self.len <= eventlog::header().len() as u64
    }

    /// Which boot and PCR.
    pub fn meta(&self) -> LogMeta {
        self.meta
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation_proto::eventlog::TAG_ZONE_LAUNCH;

    fn event() -> Event {
        Event::zone(15, TAG_ZONE_LAUNCH, "id", b"{}")
    }

    #[test]
    fn appends_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let meta = LogMeta { reset_count: 3, pcr: 15 };
        let mut log = LogStore::create(dir.path(), meta).unwrap();
        let e = event();
        log.append(&[e.clone()]).unwrap();
        log.append(&[e.clone()]).unwrap();
        drop(log);
        let (log, events) = LogStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(log.meta(), meta);
        // A torn append: half an event at the end.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("eventlog.bin")).unwrap();
        f.write_all(&e.encode()[..20]).unwrap();
        drop((f, log));
        let (log, events) = LogStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("eventlog.bin")).unwrap().len() as u64, log.len());
        // A new boot archives the old log, and never over an earlier archive.
        drop(log);
        std::fs::write(dir.path().join("eventlog-3.bin"), b"an earlier archive").unwrap();
        let log = LogStore::create(dir.path(), LogMeta { reset_count: 4, pcr: 15 }).unwrap();
        assert!(log.is_empty());
        assert_eq!(std::fs::read(dir.path().join("eventlog-3.bin")).unwrap(), b"an earlier archive");
        assert!(dir.path().join("eventlog-3.1.bin").exists());
    }

    #[test]
    fn only_a_torn_tail_is_cut_and_corruption_is_left_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::create(dir.path(), LogMeta { reset_count: 1, pcr: 15 }).unwrap();
        log.append(&[event(), event(), event()]).unwrap();
        drop(log);
        let path = dir.path().join("eventlog.bin");
        let good = std::fs::read(&path).unwrap();
        // A bad byte in the middle (an event's digest count): not a torn tail.
        let mut bad = good.clone();
        bad[65 + 8] = 7;
        std::fs::write(&path, &bad).unwrap();
        let e = LogStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("left as it is"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bad, "nothing was cut");
        // A complete last event that is malformed (an absurd data size): not torn either.
        let mut bad = good.clone();
        let last = good.len() - event().encode().len();
        bad[last + 46..last + 50].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(LogStore::open(dir.path()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), bad);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        LogStore::create(dir.path(), LogMeta { reset_count: 1, pcr: 15 }).unwrap();
        std::fs::write(dir.path().join("eventlog.bin"), b"not a log").unwrap();
        let e = LogStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("move it away") || e.to_string().contains("Move it away"), "{e}");
    }

    #[test]
    fn the_intent_is_the_events_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::create(dir.path(), LogMeta { reset_count: 1, pcr: 15 }).unwrap();
        assert_eq!(log.intent().unwrap(), None);
        log.write_intent(&[event()]).unwrap();
        assert_eq!(log.intent().unwrap(), Some(event().encode()));
        log.clear_intent();
        assert_eq!(log.intent().unwrap(), None);
    }
}
