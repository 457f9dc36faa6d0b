//! Driving the agents as a user does: the real binary, and a scripted HTTP
//! server for answers the real ingester will not give on demand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process killed when the test ends, passing or not (a panicking
/// test must not leave an agent running).
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary with `args`, its stderr into `log` (read it with
/// `std::fs::read_to_string`), no inherited INGESTION_* variables.
pub fn spawn_agent(args: &[&str], log: &Path, stdin: Stdio) -> Reaped {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-ingester"));
    cmd.env_remove("INGESTION_API_URL")
        .env_remove("INGESTION_API_KEY")
        .arg("agent")
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(err);
    Reaped(cmd.spawn().expect("start the agent"))
}

/// Runs `agent logs` with `lines` on stdin to its end; (exit code, stderr).
pub fn run_stdin_agent(args: &[&str], lines: &str, limit: Duration) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    let mut child = spawn_agent(&full, &log, Stdio::piped());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let code = wait_exit(&mut child, limit);
    (code, std::fs::read_to_string(&log).unwrap())
}

/// Waits for the process to exit (killing it after `limit`, then panicking).
pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sigterm(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// One request the scripted server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub idempotency_key: String,
    pub api_key: String,
    pub entries: usize,
    pub messages: Vec<String>,
}

/// A scripted answer: status, extra headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);

/// A tiny HTTP/1.1 server answering each request with the next scripted
/// `(status, headers, body)`, then 202 for ever.
pub struct Scripted {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub async fn start(script: Vec<Reply>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (s2.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // Head.
                        let head_end = loop {
                            if let Some(i) = find(&buf, b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 65536];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.trim()
                                        .eq_ignore_ascii_case(name)
                                        .then(|| v.trim().to_string())
                                })
                                .unwrap_or_default()
                        };
                        let len: usize = header("content-length").parse().unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 65536];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[head_end..head_end + len])
                                .unwrap_or_default();
                        let entries = body["entries"].as_array().cloned().unwrap_or_default();
                        seen.lock().unwrap().push(Seen {
                            at: Instant::now(),
                            path: head.split_whitespace().nth(1).unwrap_or("").to_string(),
                            idempotency_key: header("idempotency-key"),
                            api_key: header("x-api-key"),
                            entries: entries.len(),
                            messages: entries
                                .iter()
                                .map(|e| e["message"].as_str().unwrap_or("").to_string())
                                .collect(),
                        });
                        buf.drain(..head_end + len);
                        let (status, headers, text) = script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((202, vec![], r#"{"status":"accepted"}"#.to_string()));
                        let mut resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                            text.len()
                        );
                        for (k, v) in headers {
                            resp.push_str(&format!("{k}: {v}\r\n"));
                        }
                        resp.push_str("\r\n");
                        resp.push_str(&text);
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { url, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends lines to a file, like a program logging.
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A free loopback port for a server that must come back on the same
/// address after a kill (the agent keeps its --url).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

pub fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
