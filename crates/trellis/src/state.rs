//! The state directory: what trellis must remember across restarts that is not in the configuration file
//! (targets registered through the admin API; later the scaler's instances).
//!
//! Files are replaced atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash leaves the old version or the new one, never half of one. A file that cannot be
//! read back is reported and set aside, never fatal: the daemon must start.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const DEFAULT_DIR: &str = "/var/lib/trellis";
const FALLBACK_DIR: &str = ".trellis-state";
const REGISTRATIONS: &str = "registrations.json";

#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// `explicit`, else the first directory of `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`),
    /// else `/var/lib/trellis` when it exists and is writable (the package, the image and systemd make
    /// it), else `./.trellis-state`: a demo run as root does not create system directories unasked.
    pub fn choose(explicit: Option<PathBuf>) -> StateDir {
        let from_systemd = std::env::var_os("STATE_DIRECTORY")
            .and_then(|dirs| std::env::split_paths(&dirs).find(|d| !d.as_os_str().is_empty()));
        let path = explicit
            .or(from_systemd)
            .unwrap_or_else(|| default_dir(Path::new(DEFAULT_DIR), Path::new(FALLBACK_DIR)));
        StateDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces `name` with `bytes` atomically, creating the directory if needed.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.path)?;
        let target = self.path.join(name);
        let temporary = self.path.join(format!(".{name}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &target)?;
        // The rename itself is only durable once the directory is.
        File::open(&self.path)?.sync_all()
    }

    /// The contents of `name`; `None` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves an unreadable `name` aside (`name.corrupt`), so that it is kept for a person to look at and
    /// the next write does not destroy it.
    pub fn set_aside(&self, name: &str) -> io::Result<PathBuf> {
        let aside = self.path.join(format!("{name}.corrupt"));
        fs::rename(self.path.join(name), &aside)?;
        Ok(aside)
    }
}

/// `system` when it exists and is writable, else `fallback`; neither is created here.
fn default_dir(system: &Path, fallback: &Path) -> PathBuf {
    if system.is_dir() && writable(system) {
        system.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(".trellis-write-test");
    let ok = File::create(&probe).is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// A target added to a group through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub target_group: String,
    pub address: SocketAddr,
    pub weight: u16,
}

/// A registration as the fleet's store keeps it, and back.
impl From<&trellis_fleet::Registration> for Registration {
    fn from(r: &trellis_fleet::Registration) -> Self {
        Registration {
            target_group: r.target_group.clone(),
            address: r.address,
            weight: r.weight,
        }
    }
}

impl From<&Registration> for trellis_fleet::Registration {
    fn from(r: &Registration) -> Self {
        trellis_fleet::Registration {
            target_group: r.target_group.clone(),
            address: r.address,
            weight: r.weight,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RegistrationsFile {
    version: u32,
    targets: Vec<Registration>,
}

/// The registrations kept in the state directory. A missing file is no registrations; an unreadable one
/// is set aside and reported in the second value (for the log), and counts as none.
pub fn load_registrations(dir: &StateDir) -> (Vec<Registration>, Option<String>) {
    let file = dir.path().join(REGISTRATIONS);
    let bytes = match dir.read(REGISTRATIONS) {
        Ok(None) => return (Vec::new(), None),
        Ok(Some(bytes)) => bytes,
        Err(e) => {
            let problem = format!(
                "cannot read {}: {e}; starting without registered targets",
                file.display()
            );
            return (Vec::new(), Some(problem));
        }
    };
    match serde_json::from_slice::<RegistrationsFile>(&bytes) {
        Ok(f) if f.version == 1 => (f.targets, None),
        parsed => {
            let why = match parsed {
                Ok(f) => format!("unknown version {}", f.version),
                Err(e) => e.to_string(),
            };
            let aside = match dir.set_aside(REGISTRATIONS) {
                Ok(path) => format!("moved to {}", path.display()),
                Err(e) => format!("could not move it aside: {e}"),
            };
            let problem = format!(
                "{} is not a registrations file ({why}); {aside}; starting without registered targets",
                file.display()
            );
            (Vec::new(), Some(problem))
        }
    }
}

pub fn save_registrations(dir: &StateDir, targets: &[Registration]) -> io::Result<()> {
    let file = RegistrationsFile {
        version: 1,
        targets: targets.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    bytes.push(b'\n');
    dir.write_atomic(REGISTRATIONS, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_directory_is_used_only_when_it_exists_and_is_never_created() {
        let root = tempfile::tempdir().unwrap();
        let (system, fallback) = (
            root.path().join("var-lib-trellis"),
            root.path().join("local"),
        );
        assert_eq!(default_dir(&system, &fallback), fallback);
        assert!(
            !system.exists(),
            "a demo must not create system directories"
        );
        fs::create_dir(&system).unwrap();
        assert_eq!(default_dir(&system, &fallback), system);
        assert!(!system.join(".trellis-write-test").exists());
    }

    fn reg(group: &str, port: u16, weight: u16) -> Registration {
        Registration {
            target_group: group.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    #[test]
    fn registrations_round_trip_and_missing_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::choose(Some(tmp.path().join("state")));
        assert_eq!(load_registrations(&dir), (Vec::new(), None));
        let regs = vec![reg("web", 9001, 1), reg("api", 9002, 5)];
        save_registrations(&dir, &regs).unwrap();
        assert_eq!(load_registrations(&dir), (regs, None));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [REGISTRATIONS], "no temporary file left behind");
    }

    #[test]
    fn a_corrupt_file_is_reported_set_aside_and_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::choose(Some(tmp.path().to_path_buf()));
        fs::write(
            tmp.path().join(REGISTRATIONS),
            b"{\"version\": 1, \"targets\": [tru",
        )
        .unwrap();
        let (regs, problem) = load_registrations(&dir);
        assert!(regs.is_empty());
        let problem = problem.expect("reported");
        assert!(problem.contains("is not a registrations file"), "{problem}");
        assert!(tmp.path().join("registrations.json.corrupt").exists());
        // The next save does not destroy the evidence.
        save_registrations(&dir, &[reg("web", 1, 1)]).unwrap();
        assert!(tmp.path().join("registrations.json.corrupt").exists());
        assert_eq!(load_registrations(&dir).0, [reg("web", 1, 1)]);
    }

    #[test]
    fn an_unknown_version_is_not_guessed_at() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::choose(Some(tmp.path().to_path_buf()));
        fs::write(
            tmp.path().join(REGISTRATIONS),
            b"{\"version\": 7, \"targets\": []}",
        )
        .unwrap();
        let (_, problem) = load_registrations(&dir);
        assert!(problem.unwrap().contains("unknown version 7"));
    }
}
