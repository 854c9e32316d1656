//! The key-log file (docs/PROTOCOL.md §11): where a messenger writes session keys
//! when asked, so `simplemsgr dump --keylog` can decrypt a capture.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::crypto::KeyLog;

/// The environment variable naming the key-log file (like `SSLKEYLOGFILE`).
pub const KEYLOG_ENV: &str = "SIMPLEMSGR_KEYLOG";

/// Appends key-log lines to a file, one `write` per line.
pub struct FileKeyLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileKeyLog {
    /// Open (create, append) `path`; on Unix the file is created with mode 0600.
    pub fn open(path: &Path) -> std::io::Result<FileKeyLog> {
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        Ok(FileKeyLog {
            path: path.to_path_buf(),
            file: Mutex::new(o.open(path)?),
        })
    }

    /// The sink named by `SIMPLEMSGR_KEYLOG`, if it is set and the file opens.
    pub fn from_env() -> Option<Arc<dyn KeyLog>> {
        let path = std::env::var_os(KEYLOG_ENV)?;
        match FileKeyLog::open(Path::new(&path)) {
            Ok(k) => {
                log::warn!(
                    "writing session keys to {} ({KEYLOG_ENV}): for debugging only",
                    k.path.display()
                );
                Some(Arc::new(k))
            }
            Err(e) => {
                log::warn!("{KEYLOG_ENV}: cannot open {:?}: {e}", path);
                None
            }
        }
    }
}

impl std::fmt::Debug for FileKeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyLog")
            .field("path", &self.path)
            .finish()
    }
}

impl KeyLog for FileKeyLog {
    fn log(&self, line: &str) {
        let mut l = String::with_capacity(line.len() + 1);
        l.push_str(line);
        l.push('\n');
        if let Err(e) = self.file.lock().write_all(l.as_bytes()) {
            log::warn!("key log {}: {e}", self.path.display());
        }
    }
}
