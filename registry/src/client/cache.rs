//! The on-disk copy of the newest verified configuration: written to a temporary file, synced,
//! renamed over the old copy, and the directory synced, so a crash leaves the old or the new
//! copy, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use crate::Error;
use crate::conf::MAX_CONF_LEN;

/// Reads the cached envelope, if there is one.
pub(super) fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                action: "read configuration cache",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    // Envelope header and signature are well under 1 KiB.
    let limit = u64::try_from(MAX_CONF_LEN + 1024).unwrap_or(u64::MAX);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            action: "read configuration cache",
            path: path.to_owned(),
            source,
        })?;
    Ok(Some(bytes))
}

/// Replaces the cached envelope atomically and durably.
pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        action: "write configuration cache",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}
