//! sd_notify: tells systemd (a `Type=notify` unit) when the service is ready,
//! when it is stopping, and that it is still alive (SPEC §9).
//!
//! The protocol is one datagram per state, `KEY=VALUE` lines, sent to the
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). Hand-written: it is a few lines, and the crates for it either
//! need `unsafe` or pull in libsystemd. Errors are logged and otherwise
//! ignored, as libsystemd's `sd_notify` callers do: a lost datagram must not
//! stop the service.
//!
//! `WATCHDOG=1` is sent every half of `$WATCHDOG_USEC` (systemd's advice)
//! only while the queue writer thread and the forwarder task are alive; when
//! either has died the pings stop, so systemd kills and restarts a service
//! that would otherwise keep accepting nothing or forwarding nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The variable names no usable address (empty, or not a path).
    #[error("NOTIFY_SOCKET `{0}` is not a socket path or @abstract name: {1}")]
    Address(String, std::io::Error),
    /// The local datagram socket could not be created (out of descriptors).
    #[error("cannot create the notification socket: {0}")]
    Socket(std::io::Error),
}

/// A connection to the service manager; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// `None` when not started by a service manager (no `NOTIFY_SOCKET`), or
    /// when the variable is unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::connect(&name.to_string_lossy()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "systemd notifications disabled");
                None
            }
        }
    }

    pub fn connect(name: &str) -> Result<Notifier, NotifyError> {
        let addr = address(name).map_err(|e| NotifyError::Address(name.into(), e))?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier {
            inner: Arc::new((socket, addr)),
        })
    }

    /// Sends one state (`READY=1`, …); a failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        let (socket, addr) = &*self.inner;
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::warn!(state, error = %e, "cannot notify systemd");
        }
    }
}

#[cfg(target_os = "linux")]
fn address(name: &str) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(name),
    }
}

#[cfg(not(target_os = "linux"))]
fn address(name: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_pathname(name)
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if it is set and
/// meant for this process (`WATCHDOG_PID` unset or equal to `pid`).
pub fn watchdog_interval(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(p) = watchdog_pid {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// The watchdog pinger; stops pinging when dropped.
pub struct Watchdog {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging if systemd asked for a watchdog. `alive` says why the
    /// service is dead (`Err`) or that it is fine; once dead, pinging stops
    /// for good and systemd restarts the service after `WatchdogSec`.
    pub fn start(
        notifier: Option<&Notifier>,
        alive: impl Fn() -> Result<(), &'static str> + Send + 'static,
    ) -> Watchdog {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let every = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id());
        let (Some(notifier), Some(every)) = (notifier.cloned(), every) else {
            return Watchdog { task: None };
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(what) = alive() {
                    tracing::error!(
                        "{what}: no longer answering the systemd watchdog, so systemd restarts the service"
                    );
                    return;
                }
                notifier.send("WATCHDOG=1");
            }
        });
        Watchdog { task: Some(task) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_period_systemd_asked_for() {
        let every = watchdog_interval(Some("30000000"), None, 7);
        assert_eq!(every, Some(Duration::from_secs(15)));
    }

    #[test]
    fn watchdog_meant_for_another_process_is_ignored() {
        assert_eq!(watchdog_interval(Some("200000"), Some("8"), 7), None);
        assert_eq!(
            watchdog_interval(Some("200000"), Some("7"), 7),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn no_or_bad_watchdog_usec_means_no_watchdog() {
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn abstract_and_path_sockets_both_receive_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap())
            .unwrap()
            .send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("@edge-ingester-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&address(&name).unwrap()).unwrap();
        Notifier::connect(&name).unwrap().send("STOPPING=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
