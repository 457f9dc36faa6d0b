//! Reading back what reached Kafka, over the real protocol.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Value,
    pub ingest_id: String,
    pub content_type: String,
}

/// Reads every partition of `topics` from the beginning until `expect`
/// messages arrived and nothing more came for a second, or `limit` passed.
pub fn consume(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
    expect: usize,
    limit: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("verify-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut h: HashMap<String, String> = HashMap::new();
                if let Some(headers) = m.headers() {
                    for hd in headers.iter() {
                        h.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Consumed {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("value is JSON"),
                    ingest_id: h.remove("ingest-id").unwrap_or_default(),
                    content_type: h.remove("content-type").unwrap_or_default(),
                });
                last_new = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {
                if out.len() >= expect && last_new.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    out
}

/// (seq, index) of an ingest-id `<node>:<seq>:<index>`.
pub fn seq_index(ingest_id: &str) -> (u64, u64) {
    let mut parts = ingest_id.rsplitn(3, ':');
    let index = parts.next().unwrap().parse().unwrap();
    let seq = parts.next().unwrap().parse().unwrap();
    (seq, index)
}

/// Checks the delivery promise on what was consumed: every acknowledged
/// message is there; a repeated ingest-id always carries the same value;
/// per key and partition, first deliveries come in ingest order. Returns
/// (distinct, duplicates).
pub fn check_delivery(consumed: &[Consumed], acknowledged: &[String]) -> (usize, usize) {
    let mut by_id: HashMap<&str, &Consumed> = HashMap::new();
    let mut duplicates = 0;
    for c in consumed {
        match by_id.get(c.ingest_id.as_str()) {
            Some(first) => {
                duplicates += 1;
                assert_eq!(first.value, c.value, "same ingest-id, different value");
            }
            None => {
                by_id.insert(&c.ingest_id, c);
            }
        }
    }
    let messages: std::collections::HashSet<&str> = consumed
        .iter()
        .filter_map(|c| c.value["message"].as_str())
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|m| !messages.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged entries missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    let mut sorted: Vec<&Consumed> = consumed.iter().collect();
    sorted.sort_by_key(|c| (c.topic.clone(), c.partition, c.offset));
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for c in sorted {
        if !seen.insert(c.ingest_id.clone()) {
            continue;
        }
        let pos = seq_index(&c.ingest_id);
        let k = (c.topic.clone(), c.key.clone());
        if let Some(prev) = last.get(&k) {
            assert!(
                pos > *prev,
                "key {:?}: {:?} delivered after {:?}",
                k,
                pos,
                prev
            );
        }
        last.insert(k, pos);
    }
    (by_id.len(), duplicates)
}

/// Creates topics on a real broker (tansu does not auto-create them).
pub async fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topics");
    for r in results {
        if let Err((name, e)) = r {
            panic!("cannot create topic {name}: {e}");
        }
    }
}
