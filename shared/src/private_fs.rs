//! Files that hold secrets (a data plane's configuration cache holds every credential; the
//! SQLite store too; the TLS keys) are created readable by their owner only — directories
//! 0700, files 0600 — with the mode given at creation, not changed afterwards, so there is no
//! moment at which another local user could open them.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700. A directory that already exists
/// and lets others in (an older Gatehouse made it) is narrowed to 0700.
///
/// # Errors
/// File-system failures.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for writing, truncated, creating it with mode 0600.
///
/// # Errors
/// File-system failures.
pub fn create_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)
}

/// Opens `path` for appending, creating it with mode 0600.
///
/// # Errors
/// File-system failures.
pub fn append_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Writes `bytes` to `path`, created with mode 0600.
///
/// # Errors
/// File-system failures.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_file(path)?.write_all(bytes)
}

/// Makes sure `path` exists with mode 0600 without touching its contents (a database file
/// the driver then opens): created with that mode when missing, narrowed when it lets others
/// read it.
///
/// # Errors
/// File-system failures.
pub fn ensure_file(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_modes() {
        let top = std::env::temp_dir().join(format!("gh-private-{}", std::process::id()));
        let dir = top.join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = dir.join("secret");
        write(&file, b"x").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let db = dir.join("db");
        std::fs::write(&db, b"old").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_file(&db).unwrap();
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&db).unwrap(), b"old", "contents untouched");
        std::fs::remove_dir_all(&top).unwrap();
    }
}
