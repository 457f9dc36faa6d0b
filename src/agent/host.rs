//! Host metrics from `/proc` and `statvfs`, named and shaped after
//! OpenTelemetry's system-metric semantic conventions (SPEC §7).
//!
//! Every parser is a pure function of the file's text, so odd `/proc`
//! content is a unit test, never a panic: a line that does not parse is
//! skipped.

use std::collections::HashMap;

/// Gauge or counter (cumulative, never reset while the host is up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub value: f64,
    pub kind: Kind,
    pub unit: &'static str,
    pub attributes: Vec<(&'static str, String)>,
}

fn gauge(name: &'static str, value: f64, unit: &'static str) -> Sample {
    Sample {
        name,
        value,
        kind: Kind::Gauge,
        unit,
        attributes: Vec::new(),
    }
}

/// A cumulative byte count of one `direction`, keyed by `key` = `id`.
fn bytes_counter(
    name: &'static str,
    value: f64,
    key: &'static str,
    id: &str,
    direction: &str,
) -> Sample {
    Sample {
        kind: Kind::Counter,
        ..gauge(name, value, "By")
    }
    .with(key, id)
    .with("direction", direction)
}

impl Sample {
    fn with(mut self, key: &'static str, value: impl Into<String>) -> Sample {
        self.attributes.push((key, value.into()));
        self
    }
}

/// Filesystems that hold no user data (SPEC §7: left out).
const PSEUDO_FS: [&str; 20] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "pstore",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "ramfs",
];

/// The collector: keeps the previous CPU times, since utilization is a
/// share of the time between two collections.
pub struct Host {
    prev_cpu: HashMap<String, CpuTimes>,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    pub fn new() -> Host {
        Host {
            prev_cpu: read("/proc/stat")
                .map(|t| parse_cpu(&t))
                .unwrap_or_default(),
        }
    }

    /// One collection of every metric.
    pub fn collect(&mut self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(64);
        if let Some(text) = read("/proc/stat") {
            let now = parse_cpu(&text);
            out.extend(cpu_utilization(&self.prev_cpu, &now));
            self.prev_cpu = now;
        }
        if let Some(text) = read("/proc/loadavg") {
            out.extend(load(&text));
        }
        if let Some(text) = read("/proc/meminfo") {
            out.extend(memory(&text));
        }
        if let Some(text) = read("/proc/self/mounts") {
            for (device, mountpoint) in filesystems(&text) {
                if let Ok(s) = fs2::statvfs(&mountpoint) {
                    let used = s.total_space().saturating_sub(s.free_space());
                    for (state, v) in [("used", used), ("free", s.free_space())] {
                        out.push(
                            gauge("system.filesystem.usage", v as f64, "By")
                                .with("device", device.clone())
                                .with("mountpoint", mountpoint.clone())
                                .with("state", state),
                        );
                    }
                }
            }
        }
        if let Some(text) = read("/proc/diskstats") {
            out.extend(disk_io(&text));
        }
        if let Some(text) = read("/proc/net/dev") {
            out.extend(network_io(&text));
        }
        if let Some(n) = process_count() {
            out.push(gauge("system.processes.count", n as f64, "{process}"));
        }
        if let Some(text) = read("/proc/uptime") {
            if let Some(up) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                out.push(gauge("system.uptime", up, "s"));
            }
        }
        out.retain(|s| s.value.is_finite());
        out
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Jiffies of one `cpu` line: (busy, total). guest and guest_nice are
/// already counted in user and nice, so they are left out of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

fn parse_cpu(text: &str) -> HashMap<String, CpuTimes> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let total = v.iter().fold(0u64, |a, &x| a.saturating_add(x));
        // idle + iowait are not busy.
        let idle = v[3].saturating_add(v.get(4).copied().unwrap_or(0));
        out.insert(
            name.to_string(),
            CpuTimes {
                busy: total.saturating_sub(idle),
                total,
            },
        );
    }
    out
}

/// `system.cpu.utilization`: the whole machine (no `cpu` attribute) and each
/// CPU (`cpu` = "cpu0", …), as the busy share since the last collection.
fn cpu_utilization(
    prev: &HashMap<String, CpuTimes>,
    now: &HashMap<String, CpuTimes>,
) -> Vec<Sample> {
    let mut names: Vec<&String> = now.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let (Some(p), Some(n)) = (prev.get(name), now.get(name)) else {
            continue;
        };
        let total = n.total.saturating_sub(p.total);
        let busy = n.busy.saturating_sub(p.busy);
        let u = if total == 0 {
            0.0
        } else {
            (busy as f64 / total as f64).clamp(0.0, 1.0)
        };
        let s = gauge("system.cpu.utilization", u, "1");
        out.push(if name == "cpu" {
            s
        } else {
            s.with("cpu", name.clone())
        });
    }
    out
}

fn load(text: &str) -> Vec<Sample> {
    let f: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 3 {
        return Vec::new();
    }
    vec![
        gauge("system.cpu.load_average.1m", f[0], "{thread}"),
        gauge("system.cpu.load_average.5m", f[1], "{thread}"),
        gauge("system.cpu.load_average.15m", f[2], "{thread}"),
    ]
}

/// `system.memory.usage` by state (bytes) and `system.memory.utilization`.
/// used = total − free − buffers − cached (cached includes reclaimable slab),
/// so the four states add up to the total.
fn memory(text: &str) -> Vec<Sample> {
    let kb: HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            Some((k.trim(), rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    let (Some(&total), Some(&free)) = (kb.get("MemTotal"), kb.get("MemFree")) else {
        return Vec::new();
    };
    let buffers = kb.get("Buffers").copied().unwrap_or(0);
    let cached = kb
        .get("Cached")
        .copied()
        .unwrap_or(0)
        .saturating_add(kb.get("SReclaimable").copied().unwrap_or(0));
    let used = total.saturating_sub(free.saturating_add(buffers).saturating_add(cached));
    let mut out: Vec<Sample> = [
        ("used", used),
        ("free", free),
        ("cached", cached),
        ("buffers", buffers),
    ]
    .into_iter()
    .map(|(state, v)| gauge("system.memory.usage", v as f64 * 1024.0, "By").with("state", state))
    .collect();
    if total > 0 {
        out.push(
            gauge("system.memory.utilization", used as f64 / total as f64, "1")
                .with("state", "used"),
        );
    }
    out
}

/// (device, mountpoint) of real filesystems, once per device: block
/// devices under /dev (loop devices left out), and the root filesystem
/// whatever it is (a container's overlay).
fn filesystems(mounts: &str) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, ..] = f[..] else {
            continue;
        };
        let mountpoint = unescape(mountpoint);
        let real = device.starts_with("/dev/") && !device.starts_with("/dev/loop");
        if PSEUDO_FS.contains(&fstype) || !(real || mountpoint == "/") {
            continue;
        }
        if seen.insert(device.to_string()) {
            out.push((device.to_string(), mountpoint));
        }
    }
    out
}

/// /proc/self/mounts writes a space as `\040` (and tab, newline, backslash
/// likewise, in octal).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `system.disk.io` (bytes, cumulative): sectors of 512 bytes read and
/// written, per device; loop and ram devices left out.
fn disk_io(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let device = f[2];
        if device.starts_with("loop") || device.starts_with("ram") {
            continue;
        }
        let (Ok(read), Ok(written)) = (f[5].parse::<u64>(), f[9].parse::<u64>()) else {
            continue;
        };
        for (direction, sectors) in [("read", read), ("write", written)] {
            out.push(bytes_counter(
                "system.disk.io",
                sectors as f64 * 512.0,
                "device",
                device,
                direction,
            ));
        }
    }
    out
}

/// `system.network.io` (bytes, cumulative) per interface; `lo` left out.
fn network_io(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.is_empty() {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 9 {
            continue;
        }
        for (direction, bytes) in [("receive", f[0]), ("transmit", f[8])] {
            out.push(bytes_counter(
                "system.network.io",
                bytes as f64,
                "interface",
                name,
                direction,
            ));
        }
    }
    out
}

/// Processes: the numeric entries of /proc.
fn process_count() -> Option<usize> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(s: &'a Sample, k: &str) -> Option<&'a str> {
        s.attributes
            .iter()
            .find(|(a, _)| *a == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn cpu_utilization_is_the_busy_share_between_two_readings() {
        let a =
            parse_cpu("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\nintr 1 2\n");
        let b = parse_cpu("cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 100 0 50 400 0 0 0 0 0 0\n");
        let u = cpu_utilization(&a, &b);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].value, 0.5);
        assert_eq!(attr(&u[0], "cpu"), None);
        assert_eq!((u[1].value, attr(&u[1], "cpu")), (1.0, Some("cpu0")));
        // No time passed, or garbage: 0, never NaN or a panic.
        assert_eq!(cpu_utilization(&a, &a)[0].value, 0.0);
        assert!(parse_cpu("cpu x y\ncpu1").is_empty());
    }

    #[test]
    fn memory_states_add_up_to_the_total() {
        let m = memory("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 300 kB\nSReclaimable: 50 kB\n");
        let by = |st: &str| {
            m.iter()
                .find(|s| s.name == "system.memory.usage" && attr(s, "state") == Some(st))
                .unwrap()
                .value
        };
        assert_eq!(by("used"), 500.0 * 1024.0);
        assert_eq!(
            by("used") + by("free") + by("cached") + by("buffers"),
            1000.0 * 1024.0
        );
        let u = m
            .iter()
            .find(|s| s.name == "system.memory.utilization")
            .unwrap();
        assert_eq!(u.value, 0.5);
        assert!(memory("nonsense").is_empty());
    }

    #[test]
    fn pseudo_and_loop_filesystems_are_left_out() {
        let mounts = "proc /proc proc rw 0 0\n/dev/vda / ext4 rw 0 0\n/dev/loop0 /snap squashfs ro 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n/dev/vdb /data\\040disk xfs rw 0 0\n/dev/vda /again ext4 rw 0 0\n\
                      overlay /x overlay rw 0 0\nbroken\n";
        assert_eq!(
            filesystems(mounts),
            [
                ("/dev/vda".to_string(), "/".to_string()),
                ("/dev/vdb".to_string(), "/data disk".to_string())
            ]
        );
        assert_eq!(
            filesystems("overlay / overlay rw 0 0\n"),
            [("overlay".to_string(), "/".to_string())]
        );
    }

    #[test]
    fn disk_and_network_counters_are_bytes_by_direction() {
        let d = disk_io(
            "   8       0 sda 10 0 4 0 20 0 8 0 0 0 0\n   7 0 loop0 1 0 2 0 3 0 4 0\nshort\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].value, attr(&d[0], "direction")),
            (2048.0, Some("read"))
        );
        assert_eq!(
            (d[1].value, attr(&d[1], "direction")),
            (4096.0, Some("write"))
        );
        assert!(d.iter().all(|s| s.kind == Kind::Counter && s.unit == "By"));
        let n = network_io(
            "Inter-|   Receive\n face |bytes\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(
            (
                n[0].value,
                attr(&n[0], "interface"),
                attr(&n[0], "direction")
            ),
            (100.0, Some("eth0"), Some("receive"))
        );
        assert_eq!(
            (n[1].value, attr(&n[1], "direction")),
            (200.0, Some("transmit"))
        );
    }

    #[test]
    fn odd_proc_content_is_skipped_or_saturated_never_a_panic() {
        let max = u64::MAX;
        let cpu = parse_cpu(&format!("cpu {max} {max} 1 {max} {max}\ncpu0 -1 2 3 4\n"));
        assert!(cpu_utilization(&cpu, &cpu).iter().all(|s| s.value == 0.0));
        let m = memory(&format!(
            "MemTotal: {max} kB\nMemFree: {max} kB\nCached: {max} kB\n"
        ));
        assert!(m.iter().all(|s| s.value.is_finite() && s.value >= 0.0));
        assert_eq!(
            disk_io(&format!("8 0 sda 1 0 {max} 0 1 0 {max} 0\n")).len(),
            2
        );
        assert!(disk_io("8 0 sda x y z w v u t s\n").is_empty());
        assert!(network_io("a\nb\n:::\neth0: 1 2\n").is_empty());
        assert!(filesystems("\\\n/dev/sda\n/dev/sda /x\\04 ext4 rw\n").len() == 1);
        assert!(load("1 2").is_empty() && load("nan inf -1").len() == 3);
    }

    #[test]
    fn load_averages_and_a_real_collection() {
        let l = load("0.50 0.25 0.10 1/200 1234\n");
        assert_eq!(
            l.iter().map(|s| s.value).collect::<Vec<_>>(),
            [0.5, 0.25, 0.1]
        );
        assert!(load("").is_empty());
        let mut h = Host::new();
        let all = h.collect();
        for name in [
            "system.cpu.utilization",
            "system.memory.usage",
            "system.uptime",
            "system.processes.count",
        ] {
            assert!(all.iter().any(|s| s.name == name), "{name} missing");
        }
    }
}
