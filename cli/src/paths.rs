//! Where lifeline keeps its files.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The data folder: `--data-dir` (or `LIFELINE_DATA_DIR`), else
/// `$XDG_DATA_HOME/lifeline`, else `~/.local/share/lifeline`.
pub fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("lifeline"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home).join(".local/share/lifeline"));
    }
    bail!("cannot tell where to keep lifeline's data: set --data-dir, LIFELINE_DATA_DIR or HOME")
}

/// The keystore file inside the data folder.
pub fn keystore(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("keystore")
}
