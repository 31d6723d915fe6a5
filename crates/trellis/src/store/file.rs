//! The store of one machine: the configuration file, and the registrations in the state directory.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use trellis_config::Config;

use super::{fingerprint, invalid, Store, Truth};
use crate::daemon::ChangeError;
use crate::state::{self, Registration, StateDir};

pub struct FileStore {
    path: PathBuf,
    state_dir: StateDir,
    /// As last written (or read at start): a reload re-reads the file, not the registrations, so a
    /// registrations file damaged behind trellis's back cannot take every registered target away.
    registrations: Mutex<Vec<Registration>>,
}

impl FileStore {
    /// The store of the configuration at `path`, with the registrations kept in `state_dir`. A
    /// registrations file that cannot be read is reported in the log, set aside and counts as none.
    pub fn open(path: &Path, state_dir: StateDir) -> FileStore {
        let (registrations, problem) = state::load_registrations(&state_dir);
        if let Some(problem) = problem {
            tracing::error!("{problem}");
        }
        FileStore {
            path: path.to_path_buf(),
            state_dir,
            registrations: Mutex::new(registrations),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Registration>> {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl FileStore {
    /// The truth of `file` (already read, with its fingerprint) and the registrations.
    pub fn truth(&self, file: Config, sha256: String) -> Truth {
        Truth {
            file,
            sha256,
            registrations: self.lock().clone(),
        }
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<Truth, ChangeError> {
        let (file, sha256) = read_config(&self.path)?;
        Ok(self.truth(file, sha256))
    }

    fn save_registrations(&self, next: &[Registration]) -> Result<(), ChangeError> {
        state::save_registrations(&self.state_dir, next).map_err(|e| {
            ChangeError::Failed(format!(
                "cannot save registrations in {}: {e}",
                self.state_dir.path().display()
            ))
        })?;
        *self.lock() = next.to_vec();
        Ok(())
    }

    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }
}

/// The configuration file read once: its text for parsing, its bytes for the fingerprint.
pub fn read_config(path: &Path) -> Result<(Config, String), ChangeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ChangeError::Invalid(vec![format!("{}: {e}", path.display())]))?;
    let sha256 = fingerprint(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|_| ChangeError::Invalid(vec![format!("{}: not UTF-8 text", path.display())]))?;
    let config = trellis_config::parse(&text, path).map_err(invalid)?;
    Ok((config, sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"web\"\n\
                          protocol = \"http\"\nport = 8080\ndefault_action = { fixed_response = { status = 200 } }\n";

    fn registration(port: u16) -> Registration {
        Registration {
            target_group: "g".into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        }
    }

    #[test]
    fn registrations_persist_and_a_damaged_file_after_start_takes_none_away() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("trellis.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let state = || StateDir::choose(Some(tmp.path().join("state")));
        let store = FileStore::open(&path, state());
        assert!(store.load().unwrap().registrations.is_empty());
        store.save_registrations(&[registration(9001)]).unwrap();
        // A restart reads them back.
        let again = FileStore::open(&path, state());
        assert_eq!(again.load().unwrap().registrations, [registration(9001)]);
        // Damaged behind trellis's back: a reload keeps what was written.
        std::fs::write(tmp.path().join("state/registrations.json"), b"{").unwrap();
        assert_eq!(again.load().unwrap().registrations, [registration(9001)]);
        assert_eq!(again.load().unwrap().sha256.len(), 64);
    }

    #[test]
    fn an_invalid_file_is_every_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("trellis.toml");
        std::fs::write(&path, "[[service]]\nnam = 1\n").unwrap();
        let store = FileStore::open(&path, StateDir::choose(Some(tmp.path().join("state"))));
        match store.load() {
            Err(ChangeError::Invalid(errors)) => {
                assert!(
                    errors[0].starts_with(&path.display().to_string()),
                    "{errors:?}"
                )
            }
            other => panic!("{:?}", other.err()),
        }
    }
}
