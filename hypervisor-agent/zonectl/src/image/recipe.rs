//! Zone image recipes (`images/*.toml`).
//!
//! ```toml
//! name = "base"
//! include = ["other.toml"]          # entries of other recipes, resolved first
//! mtime = 0                         # modification time of every entry (default 0)
//!
//! [[entry]]
//! path = "/init"
//! type = "file"                     # file | dir | symlink | char
//! source = "${zone-guest}"          # an --input, or a path relative to the recipe
//! mode = "0755"
//!
//! [[entry]]
//! path = "/dev/console"
//! type = "char"
//! major = 5
//! minor = 1
//! mode = "0600"
//! ```
//!
//! Parent directories are created (mode 0755) when no entry names them. A
//! path named twice is an error, so an include cannot silently be overridden.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cpio::{Entry, Node};
use super::ImageError;

/// How deep includes may nest (guards against cycles).
const MAX_INCLUDE_DEPTH: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    mtime: Option<u32>,
    #[serde(default, rename = "entry")]
    entries: Vec<RecipeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum RecipeEntry {
    File { path: String, source: String, mode: Option<String> },
    Dir { path: String, mode: Option<String> },
    Symlink { path: String, target: String },
    Char { path: String, major: u32, minor: u32, mode: Option<String> },
}

/// A recipe resolved to archive entries.
#[derive(Debug)]
pub struct Resolved {
    /// The recipe's name.
    pub name: String,
    /// Entries, sorted by path, parents first.
    pub entries: Vec<Entry>,
    /// Modification time written for every entry.
    pub mtime: u32,
}

/// Reads `recipe` and everything it includes, loading file sources through
/// `inputs` (`${name}` references) or relative to the recipe's directory.
pub fn resolve(recipe: &Path, inputs: &HashMap<String, PathBuf>) -> Result<Resolved, ImageError> {
    let mut entries = BTreeMap::new();
    let (name, mtime) = resolve_into(recipe, inputs, &mut entries, 0)?;
    // Create missing parent directories.
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut parent = Path::new(&p).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let key = dir.to_string_lossy().into_owned();
            entries.entry(key.clone()).or_insert(Entry { path: key, perm: 0o755, node: Node::Dir });
            parent = dir.parent();
        }
    }
    for e in entries.values() {
        if let Some(parent) = Path::new(&e.path).parent().filter(|d| !d.as_os_str().is_empty()) {
            let key = parent.to_string_lossy();
            if !matches!(entries.get(key.as_ref()).map(|p| &p.node), Some(Node::Dir)) {
                return Err(ImageError::Recipe {
                    recipe: recipe.to_owned(),
                    detail: format!("/{} is inside /{key}, which is not a directory", e.path),
                });
            }
        }
    }
    Ok(Resolved { name, entries: entries.into_values().collect(), mtime })
}

fn resolve_into(
    recipe: &Path,
    inputs: &HashMap<String, PathBuf>,
    entries: &mut BTreeMap<String, Entry>,
    depth: usize,
) -> Result<(String, u32), ImageError> {
    let bad = |detail: String| ImageError::Recipe { recipe: recipe.to_owned(), detail };
    if depth > MAX_INCLUDE_DEPTH {
        return Err(bad(format!("includes nest deeper than {MAX_INCLUDE_DEPTH} (a cycle?)")));
    }
    let text = std::fs::read_to_string(recipe)
        .map_err(|source| ImageError::Read { path: recipe.to_owned(), source })?;
    let file: RecipeFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let dir = recipe.parent().unwrap_or(Path::new("."));
    for inc in &file.include {
        resolve_into(&dir.join(inc), inputs, entries, depth + 1)?;
    }

    for raw in file.entries {
        let (path, perm, node) = match raw {
            RecipeEntry::File { path, source, mode } => {
                let src = source_path(&source, dir, inputs).map_err(&bad)?;
                let data = std::fs::read(&src).map_err(|e| ImageError::Read { path: src.clone(), source: e })?;
                (path, parse_mode(mode.as_deref(), 0o644).map_err(&bad)?, Node::File(data))
            }
            RecipeEntry::Dir { path, mode } => (path, parse_mode(mode.as_deref(), 0o755).map_err(&bad)?, Node::Dir),
            RecipeEntry::Symlink { path, target } => (path, 0o777, Node::Symlink(target)),
            RecipeEntry::Char { path, major, minor, mode } => {
                (path, parse_mode(mode.as_deref(), 0o600).map_err(&bad)?, Node::CharDev(major, minor))
            }
        };
        let rel = normalize(&path).map_err(&bad)?;
        if entries.contains_key(&rel) {
            return Err(bad(format!("/{rel} is listed twice")));
        }
        entries.insert(rel.clone(), Entry { path: rel, perm, node });
    }
    Ok((file.name, file.mtime.unwrap_or(0)))
}

fn source_path(source: &str, dir: &Path, inputs: &HashMap<String, PathBuf>) -> Result<PathBuf, String> {
    if let Some(name) = source.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
        return inputs
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input `{name}` is not given; pass --input {name}=PATH"));
    }
    Ok(dir.join(source))
}

fn parse_mode(mode: Option<&str>, default: u32) -> Result<u32, String> {
    match mode {
        None => Ok(default),
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|v| *v <= 0o7777)
            .ok_or_else(|| format!("mode `{m}` is not an octal permission like \"0755\"")),
    }
}

/// `/a/b` → `a/b`; rejects empty, `.` and `..` components.
fn normalize(path: &str) -> Result<String, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("`{path}` is not a clean absolute path inside the image"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_modes_are_checked() {
        assert_eq!(normalize("/a//b/").unwrap(), "a/b");
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/").is_err());
        assert_eq!(parse_mode(Some("0755"), 0).unwrap(), 0o755);
        assert!(parse_mode(Some("rwx"), 0).is_err());
        assert!(parse_mode(Some("77777"), 0).is_err());
    }
}
