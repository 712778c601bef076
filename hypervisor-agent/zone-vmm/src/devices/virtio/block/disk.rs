//! The file behind a virtio-blk device.

use std::fs::File;
use std::os::fd::AsRawFd;
#[cfg(test)]
use std::os::unix::fs::FileExt;

use super::{ID_BYTES, SECTOR_SIZE};

/// Most iovecs one `preadv`/`pwritev` takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// The backing file cannot be used as a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Not a regular file of a usable size.
    #[error("disk {name}: {detail}")]
    Unusable {
        /// The disk's name.
        name: String,
        /// Why.
        detail: String,
    },
}

/// A disk: a regular file, a whole number of sectors, read-only or writable.
#[derive(Debug)]
pub struct Disk {
    name: String,
    file: File,
    sectors: u64,
    read_only: bool,
}

impl Disk {
    /// Wraps `file`. Its size must be a non-zero whole number of sectors, so
    /// that no sector is half in the file (a writable disk would grow).
    pub fn new(name: &str, file: File, read_only: bool) -> Result<Self, DiskError> {
        let unusable = |detail: String| DiskError::Unusable { name: name.to_owned(), detail };
        let meta = file.metadata().map_err(|e| unusable(format!("fstat: {e}")))?;
        if !meta.is_file() {
            return Err(unusable("not a regular file".into()));
        }
        let size = meta.len();
        if size == 0 || size % SECTOR_SIZE != 0 {
            return Err(unusable(format!("{size} bytes is not a whole, non-zero number of {SECTOR_SIZE}-byte sectors")));
        }
        Ok(Self { name: name.to_owned(), file, sectors: size / SECTOR_SIZE, read_only })
    }

    /// The disk's name (its `GET_ID` answer, cut to 20 bytes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// `GET_ID`: the name, NUL-padded (no terminator when it takes all 20 bytes).
    pub fn id(&self) -> [u8; ID_BYTES] {
        let mut id = [0u8; ID_BYTES];
        for (d, s) in id.iter_mut().zip(self.name.bytes()) {
            *d = s;
        }
        id
    }

    /// Whether `len` bytes from `sector` are on the disk.
    pub fn contains(&self, sector: u64, len: u64) -> bool {
        len % SECTOR_SIZE == 0
            && sector.checked_add(len / SECTOR_SIZE).is_some_and(|end| end <= self.sectors)
    }

    /// Reads `buf.len()` bytes at byte `offset` (tests look at the file with it).
    #[cfg(test)]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at byte `offset`; refused on a read-only disk.
    #[cfg(test)]
    pub fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.read_only {
            return Err(std::io::Error::from_raw_os_error(libc::EROFS));
        }
        self.file.write_all_at(buf, offset)
    }

    /// Reads the disk from byte `offset` into the buffers `iov` names, filling
    /// all of them (checked with [`Self::contains`] first; `iov` is used up).
    pub fn read_vectored_at(&self, iov: &mut [libc::iovec], offset: u64) -> std::io::Result<()> {
        self.vectored(iov, offset, false)
    }

    /// Writes the buffers `iov` names to the disk from byte `offset`; refused
    /// on a read-only disk (`iov` is used up).
    pub fn write_vectored_at(&self, iov: &mut [libc::iovec], offset: u64) -> std::io::Result<()> {
        if self.read_only {
            return Err(std::io::Error::from_raw_os_error(libc::EROFS));
        }
        self.vectored(iov, offset, true)
    }

    /// `preadv`/`pwritev` until every buffer is done: a short transfer
    /// (a signal) goes on where it stopped; none at all (the file shrank
    /// under us) is an error, never a partial answer reported as whole.
    fn vectored(&self, mut iov: &mut [libc::iovec], mut offset: u64, write: bool) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        while !iov.is_empty() {
            let pos = libc::off_t::try_from(offset).map_err(|_| Error::from(ErrorKind::InvalidInput))?;
            let count = iov.len().min(IOV_MAX) as libc::c_int;
            let fd = self.file.as_raw_fd();
            let n = if write {
                // SAFETY: `iov` holds `count` valid iovecs naming memory the
                // caller keeps mapped for this call; the kernel only reads it.
                unsafe { libc::pwritev(fd, iov.as_ptr(), count, pos) }
            } else {
                // SAFETY: as above; the kernel writes at most each iovec's
                // length into memory the caller lent for writing.
                unsafe { libc::preadv(fd, iov.as_ptr(), count, pos) }
            };
            let mut n = match usize::try_from(n) {
                Ok(0) => return Err(Error::from(if write { ErrorKind::WriteZero } else { ErrorKind::UnexpectedEof })),
                Ok(n) => n,
                Err(_) => {
                    let e = Error::last_os_error();
                    if e.kind() == ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
            };
            offset += n as u64;
            while let Some(first) = iov.first_mut() {
                if n < first.iov_len {
                    first.iov_base = first.iov_base.cast::<u8>().wrapping_add(n).cast();
                    first.iov_len -= n;
                    break;
                }
                n -= first.iov_len;
                iov = &mut std::mem::take(&mut iov)[1..];
            }
        }
        Ok(())
    }

    /// Makes written data durable (`fdatasync`); nothing to do on a read-only disk.
    pub fn flush(&self) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn size_must_be_whole_sectors_and_requests_stay_inside() {
        for bad in [0, 511, 513] {
            let e = Disk::new("d", file(bad), true).unwrap_err();
            assert!(e.to_string().contains("sectors"), "{e}");
        }
        let d = Disk::new("d", file(8 * 512), true).unwrap();
        assert_eq!(d.sectors(), 8);
        assert!(d.contains(0, 8 * 512));
        assert!(d.contains(7, 512));
        assert!(!d.contains(7, 1024), "past the last sector");
        assert!(!d.contains(0, 100), "not whole sectors");
        assert!(!d.contains(u64::MAX, 512), "overflow");
        let dir = tempfile::tempdir().unwrap();
        let e = Disk::new("d", File::open(dir.path()).unwrap(), true).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_ids_are_padded() {
        let d = Disk::new("root", file(512), true).unwrap();
        assert_eq!(d.write_at(&[1], 0).unwrap_err().raw_os_error(), Some(libc::EROFS));
        assert_eq!(&d.id()[..5], b"root\0");
        let long = Disk::new("a-disk-name-longer-than-twenty", file(512), false).unwrap();
        assert_eq!(&long.id(), b"a-disk-name-longer-t");
        long.write_at(&[7; 512], 0).unwrap();
        long.flush().unwrap();
        let mut back = [0u8; 512];
        long.read_at(&mut back, 0).unwrap();
        assert_eq!(back, [7; 512]);
    }

    #[test]
    fn vectored_io_fills_every_buffer_and_never_reports_a_short_read_as_whole() {
        let d = Disk::new("scratch", file(4096), false).unwrap();
        let mut a = [0x11u8; 1000];
        let mut b = [0x22u8; 24];
        let iov = |a: &mut [u8], b: &mut [u8]| {
            [libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: a.len() }, libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }]
        };
        d.write_vectored_at(&mut iov(&mut a, &mut b), 512).unwrap();
        let (mut x, mut y) = ([0u8; 1000], [0u8; 24]);
        d.read_vectored_at(&mut iov(&mut x, &mut y), 512).unwrap();
        assert!(x.iter().all(|&v| v == 0x11) && y.iter().all(|&v| v == 0x22));
        // Past the end of the file: an error, not a partial read.
        let e = d.read_vectored_at(&mut iov(&mut x, &mut y), 4096 - 512).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let ro = Disk::new("root", file(512), true).unwrap();
        assert_eq!(ro.write_vectored_at(&mut iov(&mut a, &mut b), 0).unwrap_err().raw_os_error(), Some(libc::EROFS));
    }
}
