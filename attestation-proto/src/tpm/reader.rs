//! A bounds-checked cursor over TPM-marshalled (big-endian) bytes.
//!
//! Every read names the field it reads, so a truncated or oversized input
//! gives an error that says where it broke. Reads never panic and never
//! allocate: they return sub-slices of the input.

use super::TpmError;

/// A read position in a byte slice holding TPM-marshalled data.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `n` bytes, named `what` in errors.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TpmError> {
        if n > self.rest.len() {
            return Err(TpmError::Truncated { what, needed: n, available: self.rest.len() });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TpmError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, TpmError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, TpmError> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, TpmError> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, TpmError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// A TPM2B sized buffer: a big-endian u16 size, then that many bytes.
    /// A size above `max` is an error before anything else is read.
    pub fn tpm2b(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], TpmError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(TpmError::TooLarge { what, size, max });
        }
        self.bytes(size, what)
    }

    /// Ends the read: an error if any byte is left after the structure `what`.
    pub fn finish(self, what: &'static str) -> Result<(), TpmError> {
        match self.rest.len() {
            0 => Ok(()),
            count => Err(TpmError::TrailingBytes { what, count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_finishes() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0xaa, 0xbb]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0203);
        assert_eq!(r.u32("c").unwrap(), 0x0405_0607);
        assert_eq!(r.u64("d").unwrap(), 9);
        assert_eq!(r.tpm2b(2, "e").unwrap(), &[0xaa, 0xbb]);
        r.finish("all").unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.clone().tpm2b(4, "buf"), Err(TpmError::TooLarge { what: "buf", size: 5, max: 4 }));
        assert_eq!(r.tpm2b(8, "buf"), Err(TpmError::Truncated { what: "buf", needed: 5, available: 2 }));
        let mut r = Reader::new(&[0, 0, 7]);
        assert_eq!(r.u16("x").unwrap(), 0);
        assert_eq!(r.clone().u32("y"), Err(TpmError::Truncated { what: "y", needed: 4, available: 1 }));
        assert_eq!(r.finish("s"), Err(TpmError::TrailingBytes { what: "s", count: 1 }));
        assert!(TpmError::TrailingBytes { what: "TPMS_ATTEST", count: 1 }.to_string().contains("TPMS_ATTEST"));
    }
}
