//! The sealed-artifact cache: a file measured once is not read, hashed and
//! copied again for every launch.
//!
//! An entry is keyed by the opened file's identity as `fstat` reports it:
//! device, inode, size, modification time and change time (both with
//! nanoseconds). Every write to a file, every truncation, and every change of
//! its metadata moves its change time, and no caller can set a change time
//! back. A launch whose file has the key of an entry gets a duplicate of that
//! entry's sealed memfd and its digest; any other launch measures the file.
//!
//! Two rules keep a hit honest:
//! - **Racy files are not cached.** Timestamps come from a coarse clock, so a
//!   file written again within one tick of its last write can keep its key. A
//!   file whose modification or change time is less than [`RACY_WINDOW`]
//!   before its measurement started is measured but never cached (the rule
//!   git uses for its index); it is cached by a later launch, once it is quiet.
//! - **A file that changes while it is read is refused.** The key is taken
//!   again after reading; if it moved, the launch fails and names the file.
//!
//! Either way the digest is over the sealed memfd, so what boots is what was
//! measured. Concurrent launches of one file measure it once (the others wait
//! for that entry), at most [`SealCache::new`]'s `parallel` files are measured
//! at once, and the cache holds at most its byte budget (least recently used
//! entries are dropped first; a zone already booted from one keeps its copy).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestation_proto::launch::Artifact;

use crate::measure::{self, MeasureError, Sealed};

/// A file modified less than this before its measurement is not cached.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// A file's identity, from `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Key {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether either timestamp is later than `since` minus [`RACY_WINDOW`].
    fn is_racy(&self, since: SystemTime) -> bool {
        let limit = since.checked_sub(RACY_WINDOW).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        let at = |(s, ns): (i64, i64)| {
            u64::try_from(s).map_or(Duration::ZERO, Duration::from_secs) + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
        };
        at(self.mtime) >= limit || at(self.ctime) >= limit
    }
}

#[derive(Debug)]
enum Slot {
    /// A launch is measuring this file; others wait for it.
    Filling,
    /// Measured: the sealed copy and its digest.
    Ready { fd: OwnedFd, size: u64, sha256: String, used: u64 },
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<Key, Slot>,
    /// Bytes held by ready entries.
    bytes: u64,
    /// Files being measured now.
    measuring: usize,
    /// Use counter (for least-recently-used eviction).
    clock: u64,
    /// Lookups answered from the cache, and files measured.
    hits: u64,
    misses: u64,
}

/// How a sealed artifact was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the cache: not read again.
    Cached,
    /// Measured now, and cached.
    Measured,
    /// Measured now, not cached (racy, larger than the budget, or caching off).
    MeasuredUncached,
}

/// Counters: what the cache holds and how often it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Entries held.
    pub entries: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Files measured.
    pub misses: u64,
}

/// The cache; share one per daemon.
#[derive(Debug)]
pub struct SealCache {
    state: Mutex<State>,
    changed: Condvar,
    max_bytes: u64,
    parallel: usize,
}

/// One file being measured: however the measurement ends (an error, an early
/// return, a panic), its `Filling` slot goes, the count of files being
/// measured drops, and waiters wake (to find the entry, or to measure).
struct Measuring<'a> {
    cache: &'a SealCache,
    key: Key,
}

impl Drop for Measuring<'_> {
    fn drop(&mut self) {
        let mut s = self.cache.lock();
        s.measuring -= 1;
        if matches!(s.slots.get(&self.key), Some(Slot::Filling)) {
            s.slots.remove(&self.key);
        }
        drop(s);
        self.cache.changed.notify_all();
    }
}

impl SealCache {
    /// A cache of at most `max_bytes` of sealed copies (0: measure every
    /// launch, cache nothing) measuring at most `parallel` files at once.
    pub fn new(max_bytes: u64, parallel: usize) -> Self {
        Self { state: Mutex::new(State::default()), changed: Condvar::new(), max_bytes, parallel: parallel.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let s = self.lock();
        let entries = s.slots.values().filter(|v| matches!(v, Slot::Ready { .. })).count();
        Stats { entries, bytes: s.bytes, hits: s.hits, misses: s.misses }
    }

    /// `file` sealed: a duplicate of the cached copy when its identity is
    /// cached, else measured now (and cached when it is not racy).
    pub fn seal(&self, what: &'static str, file: File, label: &str) -> Result<(Sealed, Source), MeasureError> {
        let read_err = |source| MeasureError::Read { what, label: label.to_owned(), source };
        // What is not a regular file is refused by `measure::seal`, below.
        let key = Key::of(&file.metadata().map_err(read_err)?);
        let mut s = self.lock();
        loop {
            let st: &mut State = &mut s;
            match st.slots.get_mut(&key) {
                Some(Slot::Ready { fd, size, sha256, used }) => {
                    let fd = fd.try_clone().map_err(|source| MeasureError::Memfd { what, source })?;
                    let artifact = Artifact { path: label.to_owned(), size: *size, sha256: sha256.clone() };
                    st.clock += 1;
                    *used = st.clock;
                    st.hits += 1;
                    return Ok((Sealed { fd, artifact }, Source::Cached));
                }
                Some(Slot::Filling) => {}
                None if st.measuring < self.parallel => break,
                None => {}
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.measuring += 1;
        s.misses += 1;
        let cacheable = self.max_bytes > 0 && key.size <= self.max_bytes;
        if cacheable {
            s.slots.insert(key, Slot::Filling);
        }
        drop(s);
        let _measuring = Measuring { cache: self, key };
        let started = SystemTime::now();
        let sealed = measure::seal(what, file.try_clone().map_err(read_err)?, label)?;
        // The file must be what it was when the read began.
        if Key::of(&file.metadata().map_err(read_err)?) != key || sealed.artifact.size != key.size {
            return Err(MeasureError::Changed { what, label: label.to_owned() });
        }
        let mut s = self.lock();
        if cacheable {
            s.slots.remove(&key);
        }
        if !cacheable || key.is_racy(started) {
            return Ok((sealed, Source::MeasuredUncached));
        }
        let copy = sealed.fd.try_clone().map_err(|source| MeasureError::Memfd { what, source })?;
        s.clock += 1;
        let used = s.clock;
        s.bytes += key.size;
        s.slots.insert(key, Slot::Ready { fd: copy, size: key.size, sha256: sealed.artifact.sha256.clone(), used });
        Self::evict(&mut s, self.max_bytes);
        tracing::debug!(what, label, bytes = s.bytes, "artifact cached");
        Ok((sealed, Source::Measured))
    }

    /// Drops least recently used ready entries until the budget holds.
    fn evict(s: &mut State, max_bytes: u64) {
        while s.bytes > max_bytes {
            let oldest = s
                .slots
                .iter()
                .filter_map(|(k, v)| match v {
                    Slot::Ready { used, size, .. } => Some((*used, *k, *size)),
                    Slot::Filling => None,
                })
                .min_by_key(|(used, _, _)| *used);
            let Some((_, key, size)) = oldest else { break };
            s.slots.remove(&key);
            s.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::sync::Arc;

    /// A file written, then given timestamps old enough not to be racy.
    fn quiet_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        age(&p);
        p
    }

    /// Sets the modification time 10 s back and waits out the racy window of
    /// the change time that this sets.
    fn age(p: &std::path::Path) {
        let old = SystemTime::now() - Duration::from_secs(10);
        File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(50));
    }

    fn contents(s: &Sealed) -> Vec<u8> {
        let mut f = File::from(s.fd.try_clone().unwrap());
        f.rewind().unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    fn open(p: &std::path::Path) -> File {
        measure::open_artifact("kernel", p).unwrap()
    }

    #[test]
    fn a_quiet_file_is_measured_once_and_a_rewritten_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = quiet_file(dir.path(), "k", b"kernel one");
        let cache = SealCache::new(1 << 20, 2);
        let (a, src) = cache.seal("kernel", open(&p), "a").unwrap();
        assert_eq!(src, Source::Measured);
        let (b, src) = cache.seal("kernel", open(&p), "b").unwrap();
        assert_eq!(src, Source::Cached);
        assert_eq!((a.artifact.sha256.clone(), b.artifact.path.as_str()), (b.artifact.sha256.clone(), "b"));
        assert_eq!(contents(&b), b"kernel one");

        // Rewritten in place with the same size, its mtime even set back:
        // the change time moved, so it is measured again.
        let mut f = File::options().write(true).open(&p).unwrap();
        f.write_all(b"kernel two").unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10)).unwrap();
        drop(f);
        let (c, src) = cache.seal("kernel", open(&p), "c").unwrap();
        assert_eq!(src, Source::MeasuredUncached, "just written: racy, so not cached");
        assert_eq!(c.artifact.sha256, attestation_proto::launch::sha256_hex(b"kernel two"));
        assert_eq!(contents(&c), b"kernel two");
        // Replaced by rename (a new inode): measured again too.
        let q = quiet_file(dir.path(), "k2", b"kernel three");
        std::fs::rename(&q, &p).unwrap();
        age(&p);
        let (d, src) = cache.seal("kernel", open(&p), "d").unwrap();
        assert_eq!((src, contents(&d)), (Source::Measured, b"kernel three".to_vec()));
        // The copy an earlier launch got is unchanged.
        assert_eq!(contents(&a), b"kernel one");
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn a_fresh_file_is_not_cached_until_it_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"fresh").unwrap();
        let cache = SealCache::new(1 << 20, 2);
        assert_eq!(cache.seal("kernel", open(&p), "k").unwrap().1, Source::MeasuredUncached);
        assert_eq!(cache.seal("kernel", open(&p), "k").unwrap().1, Source::MeasuredUncached);
        age(&p);
        assert_eq!(cache.seal("kernel", open(&p), "k").unwrap().1, Source::Measured);
        assert_eq!(cache.seal("kernel", open(&p), "k").unwrap().1, Source::Cached);
    }

    #[test]
    fn a_file_that_grows_while_it_is_read_is_refused_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let p = quiet_file(dir.path(), "k", &vec![1u8; 128 << 20]);
        let cache = Arc::new(SealCache::new(1 << 30, 2));
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut f = File::options().append(true).open(&p).unwrap();
                for _ in 0..200 {
                    f.write_all(&[2u8; 4096]).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        let got = cache.seal("kernel", open(&p), "k");
        writer.join().unwrap();
        // The writer appends every millisecond for 200 ms; the read of 128 MiB
        // into a memfd is well inside that window.
        let e = got.expect_err("a file appended to while it is read must be refused");
        assert!(matches!(e, MeasureError::Changed { .. }), "{e}");
        assert!(e.to_string().contains("changed while it was being read"), "{e}");
        assert_eq!(cache.stats().entries, 0, "a file written during or just before its read is never cached");
    }

    #[test]
    fn what_is_not_a_file_is_refused_and_leaves_nothing_to_wait_for() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SealCache::new(1 << 20, 1);
        for _ in 0..2 {
            // A second refusal comes at once: the first left no slot behind.
            let e = cache.seal("kernel", open(dir.path()), "dir").unwrap_err();
            assert!(matches!(e, MeasureError::NotAFile { .. }), "{e}");
        }
        let e = cache.seal("kernel", File::open("/dev/zero").unwrap(), "/dev/zero").unwrap_err();
        assert!(matches!(e, MeasureError::NotAFile { .. }), "{e}");
        let s = cache.lock();
        assert_eq!((s.slots.len(), s.measuring), (0, 0));
    }

    #[test]
    fn concurrent_launches_of_one_file_measure_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = quiet_file(dir.path(), "k", &vec![7u8; 8 << 20]);
        let cache = Arc::new(SealCache::new(1 << 30, 2));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, p) = (Arc::clone(&cache), p.clone());
                std::thread::spawn(move || cache.seal("kernel", open(&p), "k").unwrap().1)
            })
            .collect();
        let sources: Vec<Source> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(sources.iter().filter(|s| **s == Source::Measured).count(), 1, "{sources:?}");
        assert_eq!(sources.iter().filter(|s| **s == Source::Cached).count(), 7, "{sources:?}");
        assert_eq!(cache.stats().misses, 1);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let a = quiet_file(dir.path(), "a", &[1u8; 600]);
        let b = dir.path().join("b");
        std::fs::write(&b, [2u8; 600]).unwrap();
        let c = quiet_file(dir.path(), "c", &[3u8; 2000]);
        age(&b);
        let cache = SealCache::new(1000, 1);
        assert_eq!(cache.seal("kernel", open(&a), "a").unwrap().1, Source::Measured);
        assert_eq!(cache.seal("kernel", open(&b), "b").unwrap().1, Source::Measured);
        let st = cache.stats();
        assert_eq!((st.entries, st.bytes), (1, 600), "a was dropped for b");
        assert_eq!(cache.seal("kernel", open(&b), "b").unwrap().1, Source::Cached);
        assert_eq!(cache.seal("kernel", open(&c), "c").unwrap().1, Source::MeasuredUncached, "larger than the budget");
        let off = SealCache::new(0, 1);
        assert_eq!(off.seal("kernel", open(&a), "a").unwrap().1, Source::MeasuredUncached);
        assert_eq!(off.seal("kernel", open(&a), "a").unwrap().1, Source::MeasuredUncached);
    }
}
