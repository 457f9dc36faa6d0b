//! The command line as an operator uses it (SPEC §2).

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-ingester"));
    for var in OVERRIDE_VARS {
        c.env_remove(var);
    }
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn check_config(contents: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, contents).unwrap();
    bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_config_prints_the_effective_config_with_keys_redacted() {
    let out = check_config("[auth]\nkeys = [\"super-secret-key\"]\n[queue]\nmax_bytes = 5000\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("max_bytes = 5000"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("super-secret-key"), "{stdout}");
}

#[test]
fn check_config_exits_2_naming_an_unknown_key_or_a_bad_value() {
    let out = check_config("[queue]\nmax_byts = 1\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("max_byts") && err.contains("line 2"), "{err}");

    let out = check_config("[queue]\nwhen_full = \"explode\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("when_full") || err.contains("explode"),
        "{err}"
    );

    let out = check_config("[rate_limit]\nburst = 0\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rate_limit.burst"));

    let out = bin()
        .args(["check-config", "--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_with_a_bad_config_exits_2_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("server.listen"));
    let out = bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn flag_beats_environment_beats_file_for_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.queue.path = dir.path().join("from-file");
    let path = write_config(dir.path(), "p.toml", &cfg);
    let run_once = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["serve", "--config"]).arg(&path);
        if let Some(e) = env {
            cmd.env("EDGE_INGESTER_DATA_DIR", dir.path().join(e));
        }
        if let Some(f) = flag {
            cmd.arg("--data-dir").arg(dir.path().join(f));
        }
        cmd.stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // The queue directory is created before the server listens.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let expect = dir
            .path()
            .join(flag.or(env).unwrap_or("from-file"))
            .join("db");
        while !expect.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never appeared",
                expect.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    };
    run_once(None, None);
    run_once(Some("from-env"), None);
    run_once(Some("from-env-2"), Some("from-flag"));
    assert!(
        !dir.path().join("from-env-2").exists(),
        "env must lose to the flag"
    );
}

fn inspect_json(queue_dir: &std::path::Path) -> serde_json::Value {
    let out = bin()
        .args(["queue", "inspect", "--json", "--data-dir"])
        .arg(queue_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sigterm_finishes_in_flight_requests_and_inspect_sees_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let path = write_config(dir.path(), "s.toml", &cfg);
    let mut server = Binary::start(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Every acknowledged batch's entry ids, and every batch ever sent.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|k| {
            let (base, acked, stop) = (server.base.clone(), acked.clone(), stop.clone());
            rt.spawn(async move {
                let c = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..10).map(|i| format!("k{k}-b{n}-e{i}")).collect();
                    n += 1;
                    match c
                        .post(format!("{base}/logs"))
                        .header("content-type", "application/json")
                        .header("x-api-key", KEY)
                        .json(&log_batch(&ids))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 202 => acked.lock().unwrap().extend(ids),
                        Ok(r) if r.status() == 503 => break, // shutting down
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "no load reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // While it runs, the queue is locked: inspect says so and exits 1.
    let out = bin()
        .args(["queue", "inspect", "--data-dir"])
        .arg(&cfg.queue.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another edge-ingester process"),
        "{}",
        text(&out.stderr)
    );

    let status = server.sigterm();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(c).unwrap();
    }
    assert_eq!(status.code(), Some(0));
    let acked_ids = acked.lock().unwrap().clone();
    let acked = acked_ids.len() as u64;
    assert!(acked > 0);

    let q = inspect_json(&cfg.queue.path);
    assert_eq!(q["depth_entries"].as_u64().unwrap(), acked, "{q}");
    assert!(q["oldest_age_seconds"].as_f64().is_some());
    // The data dir that holds queue/ works too, and the text form reads well.
    let out = bin()
        .args(["queue", "inspect", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains(&format!("{} entries", acked)),
        "{}",
        text(&out.stdout)
    );
    let out = bin()
        .args(["queue", "dead-letter", "list", "--data-dir"])
        .arg(&cfg.queue.path)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).lines().next(), Some("0 dead letters"));

    drain_and_check_batches(dir.path(), &cfg, &acked_ids);
}

/// Restarts on the same queue with a delivering sink and checks what it
/// delivers: every acknowledged entry, and every batch whole — a request
/// cut by the shutdown left either its whole batch (ids `k-bN-e0..e9`) or
/// nothing, never a part.
fn drain_and_check_batches(
    dir: &std::path::Path,
    cfg: &edge_ingester::config::Config,
    acked: &[String],
) {
    let mut cfg = cfg.clone();
    let capture = dir.join("capture.jsonl");
    cfg.mock.fail = edge_ingester::config::MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let path = write_config(dir, "drain.toml", &cfg);
    let mut server = Binary::start(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for_stats(
        &client(),
        &server.base,
        Duration::from_secs(60),
        |s| s["queue"]["depth_batches"] == 0,
    ));
    assert_eq!(server.sigterm().code(), Some(0));
    let delivered = captured_messages(&capture);
    let set: std::collections::HashSet<&str> = delivered.iter().map(String::as_str).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !set.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged entries not delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut batches: std::collections::HashMap<&str, std::collections::HashSet<&str>> =
        Default::default();
    for id in &set {
        let batch = id.rsplit_once("-e").map_or(*id, |(b, _)| b);
        batches.entry(batch).or_default().insert(id);
    }
    let partial: Vec<_> = batches.iter().filter(|(_, ids)| ids.len() != 10).collect();
    assert!(partial.is_empty(), "partial batches delivered: {partial:?}");
    let mut out = std::io::stderr();
    let _ = std::io::Write::write_all(
        &mut out,
        format!(
            "sigterm: {} entries acknowledged, {} batches delivered whole\n",
            acked.len(),
            batches.len()
        )
        .as_bytes(),
    );
}

#[test]
fn inspect_of_a_missing_queue_fails_without_creating_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["queue", "inspect", "--data-dir"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no queue found"));
    assert!(!dir.path().join("nothing").exists());
}

#[test]
fn stats_command_prints_a_running_servers_figures() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "st.toml", &test_config(dir.path()));
    let server = Binary::start(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(post_json(
        &client(),
        &format!("{}/logs", server.base),
        &log_batch(&["x".into()]),
    ));
    assert_eq!(status.status(), 202);
    let out = bin()
        .args(["stats", "--url", &server.base, "--api-key", KEY])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("MockKafkaProducer"), "{stdout}");
    assert!(stdout.contains("1 batches, 1 entries"), "{stdout}");
    let out = bin()
        .args(["stats", "--url", &server.base, "--api-key", "wrong"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"));
}

#[test]
fn check_config_asks_librdkafka_about_kafka_properties_and_compression() {
    for (file, names) in [
        (
            "[kafka.properties]\n\"no.such.property\" = \"1\"\n",
            "no.such.property",
        ),
        (
            "[kafka.properties]\n\"linger.ms\" = \"soon\"\n",
            "linger.ms",
        ),
        ("[kafka]\ncompression = \"zip\"\n", "kafka.compression"),
    ] {
        let out = check_config(file);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(names), "{file}: {err}");
    }
    let out = check_config(
        "[kafka]\ncompression = \"lz4\"\n[kafka.properties]\n\"linger.ms\" = \"20\"\n\
         \"security.protocol\" = \"plaintext\"\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn check_config_names_a_misspelt_or_invalid_librdkafka_property() {
    for (file, named) in [
        (
            "[kafka.properties]\n\"ssl.ca.locaton\" = \"/etc/ca.pem\"\n",
            "`ssl.ca.locaton`: No such configuration property",
        ),
        (
            "[kafka.properties]\n\"security.protocol\" = \"bogus\"\n",
            "`security.protocol`: Invalid value \"bogus\"",
        ),
    ] {
        let out = check_config(file);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(
            err.contains("kafka.properties") && err.contains(named),
            "{file}: {err}"
        );
    }
}

const SASL_SSL: &str = "[forwarder]\nsink = \"kafka\"\n[kafka.properties]\n\
    \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
    \"sasl.username\" = \"edge\"\n\"sasl.password\" = \"hunter2-do-not-print\"\n";

#[test]
fn check_config_accepts_kafka_over_tls_with_sasl_and_redacts_the_password() {
    let out = check_config(SASL_SSL);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\"sasl.password\" = \"<redacted>\""),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("SCRAM-SHA-512"), "{stdout}");
}

#[test]
fn check_config_refuses_a_ca_file_librdkafka_cannot_load() {
    let out = check_config(&format!(
        "{SASL_SSL}\"ssl.ca.location\" = \"/nonexistent/kafka-ca.pem\"\n"
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ssl.ca.location"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn the_kafka_tls_sasl_example_config_passes_check_config() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/kafka-tls-sasl.example.toml"
    );
    let out = bin()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("SASL_SSL") && stdout.contains("<redacted>"),
        "{stdout}"
    );
    assert!(!stdout.contains("change-me"), "{stdout}");
}

#[tokio::test]
async fn dead_letter_replay_takes_the_queue_settings_from_config() {
    use edge_ingester::config::QueueConfig;
    use edge_ingester::queue::{encode_record, IndexEntry, Queue};
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let q = Queue::open(&QueueConfig {
        path: qdir.clone(),
        ..QueueConfig::default()
    })
    .unwrap();
    let body = serde_json::to_vec(&log_batch(&["dead".into()])).unwrap();
    let batch = edge_ingester::api::parse_batch(
        edge_ingester::model::Kind::Logs,
        &body,
        edge_ingester::model::Limits {
            max_batch_entries: 10,
        },
    )
    .unwrap_or_else(|_| panic!("valid batch"));
    let record = encode_record(&batch);
    let index = IndexEntry {
        kind: batch.kind(),
        entries: 1,
        record_bytes: record.len() as u32,
        enqueued_at_ms: 0,
    };
    let seq = q.append(record, index).await.unwrap();
    q.dead_letter(seq, "refused by the test").unwrap();
    q.close();
    drop(q);

    // A config whose queue cannot hold the batch: replay must obey it.
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, "[queue]\nmax_bytes = 10\n").unwrap();
    let run = |config: Option<&std::path::Path>| {
        let mut c = bin();
        c.args(["queue", "dead-letter", "replay", "--data-dir"])
            .arg(&qdir);
        if let Some(p) = config {
            c.arg("--config").arg(p);
        }
        c.output().unwrap()
    };
    let out = run(Some(&cfg));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("full"), "{}", text(&out.stderr));
    let out = run(None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replayed 1"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_inflight_budget_below_two_bodies_is_refused() {
    let out = check_config("[server]\nmax_body_bytes = 1000\nmax_inflight_bytes = 1999\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("server.max_inflight_bytes"), "{err}");
    let out = check_config("[server]\nmax_body_bytes = 1000\nmax_inflight_bytes = 2000\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
