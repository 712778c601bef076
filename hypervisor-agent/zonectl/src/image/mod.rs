//! Reproducible zone images: a recipe (`images/*.toml`) resolved to a sorted
//! list of entries and written as an uncompressed `newc` cpio archive with
//! fixed owners and mtimes. The same recipe and inputs always give the same
//! bytes, so the digest a policy expects can be computed before any zone runs.

pub mod cpio;
pub mod oci;
pub mod recipe;
pub mod verity;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A recipe is malformed.
    #[error("recipe {recipe}: {detail}")]
    Recipe {
        /// The recipe file.
        recipe: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the image to {path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A built image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    /// The recipe's name.
    pub name: String,
    /// Where the archive was written.
    pub path: PathBuf,
    /// Archive size in bytes.
    pub size: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    /// Number of entries (trailer excluded).
    pub entries: usize,
}

/// Builds `recipe` into the archive bytes.
pub fn build_bytes(recipe: &Path, inputs: &HashMap<String, PathBuf>) -> Result<(String, Vec<u8>, usize), ImageError> {
    let resolved = recipe::resolve(recipe, inputs)?;
    let mut out = Vec::new();
    cpio::write_archive(&mut out, &resolved.entries, resolved.mtime)
        .map_err(|e| ImageError::Recipe { recipe: recipe.to_owned(), detail: e.to_string() })?;
    Ok((resolved.name, out, resolved.entries.len()))
}

/// Builds `recipe` into `output`, written atomically (temporary file + rename).
pub fn build(recipe: &Path, inputs: &HashMap<String, PathBuf>, output: &Path) -> Result<Built, ImageError> {
    let (name, bytes, entries) = build_bytes(recipe, inputs)?;
    let werr = |source| ImageError::Write { path: output.to_owned(), source };
    let tmp = output.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(&bytes).map_err(werr)?;
        f.sync_all().map_err(werr)?;
    }
    std::fs::rename(&tmp, output).map_err(werr)?;
    Ok(Built {
        name,
        path: output.to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn same_inputs_give_identical_bytes_whatever_the_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("guest");
        std::fs::write(&bin, b"\x7fELF pretend").unwrap();
        std::fs::write(
            dir.path().join("r.toml"),
            r#"
name = "t"
[[entry]]
path = "/sbin/tool"
type = "file"
source = "${guest}"
mode = "0755"
[[entry]]
path = "/dev/console"
type = "char"
major = 5
minor = 1
[[entry]]
path = "/bin/sh"
type = "symlink"
target = "/sbin/tool"
"#,
        )
        .unwrap();
        let inputs = HashMap::from([("guest".to_string(), bin.clone())]);
        let a = build(&dir.path().join("r.toml"), &inputs, &dir.path().join("a.cpio")).unwrap();
        let f = std::fs::File::options().write(true).open(&bin).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
        let b = build(&dir.path().join("r.toml"), &inputs, &dir.path().join("b.cpio")).unwrap();
        assert_eq!(a.sha256, b.sha256);
        // sbin, sbin/tool, dev, dev/console, bin, bin/sh
        assert_eq!(a.entries, 6);
    }

    #[test]
    fn missing_inputs_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("r.toml");
        std::fs::write(&r, "name='t'\n[[entry]]\npath='/x'\ntype='file'\nsource='${nope}'\n").unwrap();
        let e = build_bytes(&r, &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("--input nope=PATH"), "{e}");
        std::fs::write(&r, "name='t'\n[[entry]]\npath='/x'\ntype='dir'\n[[entry]]\npath='x'\ntype='dir'\n").unwrap();
        assert!(build_bytes(&r, &HashMap::new()).unwrap_err().to_string().contains("twice"));
        std::fs::write(&r, "name='t'\ninclude=['r.toml']\n").unwrap();
        assert!(build_bytes(&r, &HashMap::new()).unwrap_err().to_string().contains("cycle"));
    }
}
