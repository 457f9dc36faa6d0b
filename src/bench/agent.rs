//! `edge-ingester bench --workload agent-logs | agent-metrics`: the agents'
//! cost (SPEC §7 targets, issue 9).
//!
//! - **agent-logs**: a writer appends `--drain-entries` varied lines (~120 B)
//!   to a file as fast as it can; one `agent logs --file … --from-beginning
//!   --batch-size --batch` follows it into a server whose sink fails (so
//!   every line stays queued). Measured: lines/s end to end (first line
//!   written → last line acknowledged, read from the server's
//!   `logs_received`), the agent's CPU (utime + stime from /proc) per
//!   100,000 lines/s, and its peak RSS (VmHWM).
//! - **agent-metrics**: `agent metrics --interval 10` for `--seconds`; its
//!   CPU as a share of one core.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{cpu_seconds, queue_stats, BenchArgs, Server, KEY};

fn hwm_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn spawn_agent(exe: &Path, args: &[String]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.env_remove("INGESTION_API_URL")
        .env_remove("INGESTION_API_KEY")
        .arg("agent")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().context("cannot start the agent")
}

/// A varied log line of ~120 bytes.
fn line(n: u64) -> String {
    const LEVELS: [&str; 5] = ["DEBUG", "INFO", "INFO", "WARN", "ERROR:"];
    format!(
        "{} GET /api/v1/items/{} status={} took={}ms user=u{:06} trace={:016x}\n",
        LEVELS[(n % 5) as usize],
        n % 10_000,
        [200, 200, 201, 404, 500][(n % 5) as usize],
        n % 900,
        n % 999_983,
        n.wrapping_mul(2_654_435_761)
    )
}

pub async fn logs(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut server = Server::start(exe, dir, "[mock]\nfail = \"always\"\n")?;
    let file = dir.join("app.log");
    std::fs::File::create(&file)?;
    let total = args.drain_entries;
    let agent_args: Vec<String> = [
        "logs",
        "--service",
        "bench",
        "--file",
        file.to_str().context("path")?,
        "--from-beginning",
        "--state-dir",
        dir.join("agent-state").to_str().context("path")?,
        "--url",
        &server.base,
        "--api-key",
        KEY,
        "--batch-size",
        &args.batch.to_string(),
        "--max-buffer",
        &args.batch.max(10_000).to_string(),
        "--flush-interval",
        "0.2",
    ]
    .map(String::from)
    .to_vec();
    let mut agent = spawn_agent(exe, &agent_args)?;
    // Let it reach the (empty) file first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let cpu_before = cpu_seconds(agent.id());
    let writer = std::thread::spawn(move || -> std::io::Result<Duration> {
        let t = Instant::now();
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new().append(true).open(&file)?,
        );
        for n in 0..total {
            out.write_all(line(n).as_bytes())?;
        }
        out.flush()?;
        Ok(t.elapsed())
    });
    let http = reqwest::Client::new();
    loop {
        let s = queue_stats(&http, &server.base).await?;
        if s["logs_received"].as_u64().unwrap_or(0) >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the agent did not catch up in 10 minutes: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(agent.id()) - cpu_before;
    let hwm = hwm_mb(agent.id());
    let wrote = writer.join().expect("writer thread")?;
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let _ = agent.wait();
    server.stop();
    let rate = total as f64 / elapsed.as_secs_f64();
    let cores = cpu / elapsed.as_secs_f64();
    Ok(format!(
        "workload agent-logs: {total} lines (~120 B) appended at full speed (written in {:.1} s), \
         one agent (--batch-size {}) following the file into a server with a failing sink\n\
         end to end:  {rate:.0} lines/s ({:.1} s from the first line written to the last acknowledged)\n\
         agent CPU:   {:.0}% of one core in all, {:.0}% per 100,000 lines/s\n\
         agent RSS:   peak {hwm:.1} MB (VmHWM)\n",
        wrote.as_secs_f64(),
        args.batch,
        elapsed.as_secs_f64(),
        cores * 100.0,
        cores * 100.0 / (rate / 100_000.0),
    ))
}

pub async fn metrics(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut server = Server::start(exe, dir, "[mock]\nfail = \"always\"\n")?;
    let agent_args: Vec<String> = [
        "metrics",
        "--service",
        "bench",
        "--interval",
        "10",
        "--url",
        &server.base,
        "--api-key",
        KEY,
    ]
    .map(String::from)
    .to_vec();
    let mut agent = spawn_agent(exe, &agent_args)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu = cpu_seconds(agent.id());
    let elapsed = started.elapsed();
    let hwm = hwm_mb(agent.id());
    let s = queue_stats(&reqwest::Client::new(), &server.base).await?;
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let _ = agent.wait();
    server.stop();
    Ok(format!(
        "workload agent-metrics: agent metrics --interval 10 for {:.0} s\n\
         agent CPU:   {:.2}% of one core ({cpu:.2} s), {} metrics received by the server\n\
         agent RSS:   peak {hwm:.1} MB (VmHWM)\n",
        elapsed.as_secs_f64(),
        cpu / elapsed.as_secs_f64() * 100.0,
        s["metrics_received"]
    ))
}
