//! Files that hold keys, wrapped keys, PINs or personal data: directories `0700`, files `0600`,
//! whatever the process's umask. The software key store, the message logs' data directories, the
//! portal's view log and reports, and every service's data directory are made this way.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a private directory: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a private file: the owner reads and writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with [`DIR_MODE`]; an existing `dir` is narrowed to it
/// (its parents are left as they are: they may be shared, like `/var/lib`).
///
/// # Errors
///
/// The directory cannot be created or its mode set.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Opens `path` for writing with [`FILE_MODE`], created or truncated; an existing file is
/// narrowed to it.
///
/// # Errors
///
/// The file cannot be opened or its mode set.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Opens `path` for appending with [`FILE_MODE`], created if missing; an existing file is
/// narrowed to it.
///
/// # Errors
///
/// The file cannot be opened or its mode set.
pub fn append_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `bytes` to `path` with [`FILE_MODE`] (not synced).
///
/// # Errors
///
/// The file cannot be written.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_file(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_the_owners_and_files_too_even_when_they_were_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o755)).unwrap();
        create_dir(&open).unwrap();
        assert_eq!(mode(&open), DIR_MODE, "an existing directory is narrowed");
        let file = dir.join("key");
        write(&file, b"secret").unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        append_file(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE, "an existing file is narrowed");
        assert_eq!(std::fs::read(&file).unwrap(), b"secret");
    }
}
