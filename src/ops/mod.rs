//! Running the service under an operator's tools: systemd's readiness and
//! watchdog protocol (`notify.rs`).

pub mod notify;
