//! The `process` launch provider: each instance is a child process of the daemon, on a port of its own.
//!
//! Children never outlive the daemon: each runs in its own process group (so a stop reaches whatever it
//! started) and asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), which covers the
//! daemon being SIGKILLed, when no clean-up code of ours can run.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use trellis_config::ProcessLaunch;

use crate::ScalerError;

/// A running child.
pub struct ProcessInstance {
    pub id: String,
    pub host: IpAddr,
    pub port: u16,
    child: Child,
    pid: i32,
}

impl ProcessInstance {
    /// Where the instance serves: its host (loopback unless a fleet node says otherwise) on its port.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.port))
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `Some(how it ended)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(describe(status)),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        }
    }

    /// `stop_signal` to its process group, then SIGKILL after `timeout` if it is still there.
    pub async fn stop(mut self, signal: i32, timeout: Duration) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return describe(status);
        }
        signal_group(self.pid, signal);
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => describe(status),
            _ => {
                signal_group(self.pid, libc::SIGKILL);
                match self.child.wait().await {
                    Ok(status) => format!("{} (SIGKILL after {timeout:?})", describe(status)),
                    Err(e) => format!("cannot wait for it: {e}"),
                }
            }
        }
    }

    /// CPU time used so far (user + system), in clock ticks, from `/proc/PID/stat`.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name (field 2) may contain spaces; the fields after its closing parenthesis do not.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }
}

/// Launches instances of one scaling group.
pub struct ProcessProvider {
    launch: ProcessLaunch,
    group: String,
    /// The trellis binary, for `{self}`.
    self_exe: PathBuf,
    /// The address instances listen on, for `{host}`: loopback, or a fleet node's own address.
    host: IpAddr,
}

impl ProcessProvider {
    pub fn new(launch: ProcessLaunch, group: &str, self_exe: PathBuf) -> Self {
        ProcessProvider {
            launch,
            group: group.to_string(),
            self_exe,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// Instances listen on `host` (`{host}`) instead of loopback.
    pub fn with_host(mut self, host: IpAddr) -> Self {
        self.host = host;
        self
    }

    /// Starts instance `id` on `port`, chosen by someone else (a fleet's group owner, which knows the
    /// ports the group's other instances hold).
    pub fn launch_on(&self, id: &str, port: u16) -> Result<ProcessInstance, ScalerError> {
        self.spawn(id, port)
    }

    /// Starts instance `id` on a free port of the range that no other instance holds. Must be called
    /// from a tokio worker (not the blocking pool): the parent-death signal follows the thread that
    /// forked, and blocking-pool threads come and go.
    pub fn launch(&self, id: &str, taken: &HashSet<u16>) -> Result<ProcessInstance, ScalerError> {
        let port = self.free_port(taken)?;
        self.spawn(id, port)
    }

    fn spawn(&self, id: &str, port: u16) -> Result<ProcessInstance, ScalerError> {
        // The placeholders mean the same in the command and in the environment (`PORT = "{port}"`).
        let fill = |a: &String| {
            a.replace("{self}", &self.self_exe.display().to_string())
                .replace("{port}", &port.to_string())
                .replace("{host}", &self.host.to_string())
                .replace("{id}", id)
                .replace("{group}", &self.group)
        };
        let argv: Vec<String> = self.launch.command.iter().map(fill).collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(self.launch.env.iter().map(|(k, v)| (k, fill(v))))
            .env("TRELLIS_INSTANCE_ID", id)
            .env("TRELLIS_SCALING_GROUP", &self.group)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.launch.workdir {
            cmd.current_dir(dir);
        }
        die_with_parent(&mut cmd);
        without_service_manager(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| ScalerError::Spawn {
            command: argv.join(" "),
            source,
        })?;
        let pid = child.id().map_or(0, |p| p as i32);
        let log = self
            .launch
            .log_dir
            .as_deref()
            .map(|d| d.join(format!("{id}.log")));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_output(
                out,
                self.group.clone(),
                id.to_string(),
                log.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err, self.group.clone(), id.to_string(), log));
        }
        Ok(ProcessInstance {
            id: id.to_string(),
            host: self.host,
            port,
            child,
            pid,
        })
    }

    fn free_port(&self, taken: &HashSet<u16>) -> Result<u16, ScalerError> {
        let (lo, hi) = self.launch.ports.ok_or(ScalerError::NoPorts)?;
        (lo..=hi)
            .filter(|p| !taken.contains(p))
            // Something else on the machine may hold it: it must be bindable now.
            .find(|&p| TcpListener::bind((self.host, p)).is_ok())
            .ok_or(ScalerError::PortsExhausted { lo, hi })
    }
}

/// Each line of a child's output goes to the daemon's log with its instance id, or to its own file.
async fn forward_output(
    stream: impl AsyncRead + Unpin,
    group: String,
    id: String,
    file: Option<PathBuf>,
) {
    let mut lines = BufReader::new(stream).lines();
    let mut file = match &file {
        Some(path) => open_log(path).await,
        None => None,
    };
    while let Ok(Some(line)) = lines.next_line().await {
        match &mut file {
            Some(f) => {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            None => tracing::info!(scaling_group = %group, instance = %id, "{line}"),
        }
    }
}

async fn open_log(path: &Path) -> Option<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| tracing::warn!(log = %path.display(), error = %e, "cannot open the instance's log file; its output is dropped"))
        .ok()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "exited".to_string(),
    }
}

/// Signals the whole process group of `pid` (the child leads its own group).
fn signal_group(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY-free: `kill` is a plain syscall wrapper; a negative pid addresses the process group.
        let _ = kill(-pid, signal);
    }
}

#[allow(unsafe_code)]
fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// systemd's notify variables are meant for trellis alone: an instance (or hook) that inherits them and
/// speaks the notify protocol itself would mark trellis's unit ready, or feed its watchdog.
pub(crate) fn without_service_manager(cmd: &mut Command) {
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(name);
    }
}

/// Asks the kernel to SIGKILL the child when the daemon dies, however it dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: `getpid` is read before the fork; the closure runs in the forked child before exec and
    // calls only prctl(2) and getppid(2), both async-signal-safe, and allocates nothing.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nothing would ever signal us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
