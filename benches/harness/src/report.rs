//! Aggregating samples into statistics, and printing them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::util::{human_size, percentile};

/// One successful operation.
#[derive(Debug, Clone)]
pub struct Sample {
    pub kind: &'static str,
    pub latency: Duration,
    /// Time to first byte, for operations that read a body.
    pub ttfb: Option<Duration>,
    pub bytes: u64,
}

/// One failed operation.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: &'static str,
    pub key: String,
    pub detail: String,
    pub at: Duration,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Pcts {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Pcts {
    /// From microsecond values (sorted here). `None` if there are none.
    pub fn of(mut us: Vec<u64>) -> Option<Pcts> {
        if us.is_empty() {
            return None;
        }
        us.sort_unstable();
        let ms = |p: f64| percentile(&us, p).unwrap_or(0) as f64 / 1000.0;
        let mean = us.iter().map(|&v| v as f64).sum::<f64>() / us.len() as f64 / 1000.0;
        Some(Pcts { p50: ms(50.0), p90: ms(90.0), p99: ms(99.0), max: ms(100.0), mean })
    }
}

/// Statistics of one kind of operation (or of all of them).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub kind: String,
    /// Operations attempted (successes and errors).
    pub requests: u64,
    pub errors: u64,
    /// Bytes sent (pushes) or received (reads) by successful operations.
    pub bytes: u64,
    /// Successful operations per second of wall time.
    pub req_per_s: f64,
    /// Megabytes (10^6 bytes) per second of wall time.
    pub mb_per_s: f64,
    pub latency_ms: Option<Pcts>,
    pub ttfb_ms: Option<Pcts>,
}

impl Stats {
    pub fn of(kind: &str, samples: &[&Sample], errors: u64, elapsed: Duration) -> Stats {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let bytes: u64 = samples.iter().map(|s| s.bytes).sum();
        let lat = samples.iter().map(|s| s.latency.as_micros() as u64).collect();
        let ttfb: Vec<u64> = samples.iter().filter_map(|s| s.ttfb.map(|t| t.as_micros() as u64)).collect();
        Stats {
            kind: kind.to_string(),
            requests: samples.len() as u64 + errors,
            errors,
            bytes,
            req_per_s: samples.len() as f64 / secs,
            mb_per_s: bytes as f64 / 1e6 / secs,
            latency_ms: Pcts::of(lat),
            ttfb_ms: Pcts::of(ttfb),
        }
    }
}

/// Resident memory of the server during a run, from `/proc/PID/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Rss {
    pub pid: u32,
    pub samples: u64,
    pub start_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    pub end_kib: Option<u64>,
    /// The process could no longer be read during the run (it exited?).
    pub vanished: bool,
    /// CPU time (user + system, all threads) the process used during the timed run, in ms.
    pub cpu_ms: Option<u64>,
}

/// Everything about one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub head: ReportHead,
    pub setup_s: f64,
    pub elapsed_s: f64,
    pub total: Stats,
    /// Per kind of operation, when a workload mixes several.
    pub by_kind: Vec<Stats>,
    /// Failures by kind of failure.
    pub errors: BTreeMap<String, u64>,
    /// A few failure messages, with the time into the run they happened.
    pub error_samples: Vec<String>,
    pub rss: Option<Rss>,
}

impl Report {
    /// Builds the report from every sample and failure of a run.
    pub fn build(
        head: ReportHead,
        samples: &[Sample],
        failures: &[Failure],
        elapsed: Duration,
        setup: Duration,
        rss: Option<Rss>,
    ) -> Report {
        let all: Vec<&Sample> = samples.iter().collect();
        let total = Stats::of("all", &all, failures.len() as u64, elapsed);
        let mut kinds: Vec<&'static str> = samples.iter().map(|s| s.kind).collect();
        kinds.extend(failures.iter().map(|f| f.kind));
        kinds.sort_unstable();
        kinds.dedup();
        let by_kind = if kinds.len() > 1 {
            kinds
                .iter()
                .map(|k| {
                    let s: Vec<&Sample> = samples.iter().filter(|s| s.kind == *k).collect();
                    let e = failures.iter().filter(|f| f.kind == *k).count() as u64;
                    Stats::of(k, &s, e, elapsed)
                })
                .collect()
        } else {
            Vec::new()
        };
        let total =
            Stats { kind: kinds.first().filter(|_| kinds.len() == 1).unwrap_or(&"all").to_string(), ..total };
        let mut errors = BTreeMap::new();
        let mut error_samples = Vec::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for f in failures {
            *errors.entry(f.key.clone()).or_insert(0) += 1;
            let n = seen.entry(&f.key).or_insert(0);
            if *n < 3 && error_samples.len() < 20 {
                error_samples.push(format!("[{:.3}s] {}", f.at.as_secs_f64(), f.detail));
            }
            *n += 1;
        }
        Report {
            head,
            setup_s: setup.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            total,
            by_kind,
            errors,
            error_samples,
            rss,
        }
    }

    /// The throughput figure compared across runs: MB/s for workloads that move blob data,
    /// requests per second otherwise.
    pub fn throughput(&self) -> (f64, &'static str) {
        match self.head.workload.as_str() {
            "push-mono" | "push-chunked" | "pull" | "pull-cold" | "pull-warm" => {
                (self.total.mb_per_s, "MB/s")
            }
            _ => (self.total.req_per_s, "req/s"),
        }
    }

    /// The server's CPU cost of the work: ms per GB moved for blob workloads, µs per request
    /// otherwise. Unlike throughput, it does not depend on how much CPU the client left it.
    pub fn server_cpu(&self) -> Option<(f64, &'static str)> {
        let cpu = self.rss.as_ref()?.cpu_ms? as f64;
        match self.throughput().1 {
            "MB/s" if self.total.bytes > 0 => Some((cpu / (self.total.bytes as f64 / 1e9), "CPU ms/GB")),
            "req/s" if self.total.requests > 0 => {
                Some((cpu * 1e3 / self.total.requests as f64, "CPU µs/req"))
            }
            _ => None,
        }
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.total.latency_ms.as_ref().map(|p| p.p99)
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut line = format!(
            "{} against {}  repo {}  concurrency {}",
            self.head.workload, self.head.url, self.head.repo, self.head.concurrency
        );
        if let Some(u) = &self.head.upstream {
            line += &format!("  upstream {u}");
        }
        if let Some(m) = &self.head.mirror_path {
            line += &format!("  mirror paths {m}");
        }
        if let Some(s) = self.head.size {
            line += &format!("  size {}", human_size(s));
        }
        if let Some(c) = self.head.chunk {
            line += &format!("  chunk {}", human_size(c));
        }
        if let Some(d) = self.head.distinct_blobs {
            line += &format!("  distinct blobs {d}");
        }
        line += &format!("  setup {:.2}s  elapsed {:.2}s\n", self.setup_s, self.elapsed_s);
        o += &line;
        o += &table_header();
        o += &table_row(&self.total);
        for s in &self.by_kind {
            o += &table_row(s);
        }
        if !self.errors.is_empty() {
            o += "errors:\n";
            for (k, n) in &self.errors {
                o += &format!("  {n:>8}  {k}\n");
            }
            for s in &self.error_samples {
                o += &format!("    e.g. {s}\n");
            }
        }
        if let Some(r) = &self.rss {
            let f = |v: Option<u64>| v.map_or("?".to_string(), |k| human_size(k * 1024));
            o += &format!(
                "server RSS (pid {}): start {}  peak {}  end {}  ({} samples every 100ms){}\n",
                r.pid,
                f(r.start_kib),
                f(r.peak_kib),
                f(r.end_kib),
                r.samples,
                if r.vanished { "  PROCESS VANISHED DURING THE RUN" } else { "" }
            );
            if let (Some(ms), Some((v, unit))) = (r.cpu_ms, self.server_cpu()) {
                o += &format!(
                    "server CPU (pid {}): {:.2} s in the run, {v:.1} {unit}\n",
                    r.pid,
                    ms as f64 / 1e3
                );
            }
        }
        o
    }
}

/// The descriptive part of a report, known before the run.
#[derive(Debug, Clone, Serialize)]
pub struct ReportHead {
    pub workload: String,
    /// The registry under test (for `pull-cold` and `pull-warm`, the mirror).
    pub url: String,
    /// The registry the mirror fetches from, for `pull-cold` and `pull-warm`.
    pub upstream: Option<String>,
    /// How the mirror names the upstream's repositories (`same`, `trow`, `ns`).
    pub mirror_path: Option<String>,
    pub repo: String,
    pub concurrency: usize,
    #[serde(rename = "size_bytes")]
    pub size: Option<u64>,
    #[serde(rename = "chunk_bytes")]
    pub chunk: Option<u64>,
    pub seed: u64,
    /// For pushes: how many different blobs were cycled through; for pull-cold, how many were
    /// pulled (each once).
    pub distinct_blobs: Option<u64>,
}

pub fn table_header() -> String {
    format!(
        "{:<20} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "kind",
        "requests",
        "errors",
        "req/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ttfb p50",
        "ttfb p99"
    )
}

pub fn table_row(s: &Stats) -> String {
    let p = |v: Option<f64>| v.map_or("-".to_string(), fmt_ms);
    let l = s.latency_ms.as_ref();
    let t = s.ttfb_ms.as_ref();
    format!(
        "{:<20} {:>9} {:>7} {:>10.1} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        s.kind,
        s.requests,
        s.errors,
        s.req_per_s,
        s.mb_per_s,
        p(l.map(|x| x.p50)),
        p(l.map(|x| x.p90)),
        p(l.map(|x| x.p99)),
        p(l.map(|x| x.max)),
        p(t.map(|x| x.p50)),
        p(t.map(|x| x.p99)),
    )
}

/// Milliseconds with a precision that suits their size.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: &'static str, ms: u64, bytes: u64) -> Sample {
        Sample { kind, latency: Duration::from_millis(ms), ttfb: None, bytes }
    }

    #[test]
    fn builds_stats_per_kind_and_errors() {
        let samples: Vec<Sample> =
            (1..=100).map(|i| sample(if i % 10 == 0 { "push" } else { "pull" }, i, 1_000_000)).collect();
        let failures = vec![
            Failure {
                kind: "push",
                key: "HTTP 500 on PUT x".into(),
                detail: "boom".into(),
                at: Duration::ZERO,
            },
            Failure {
                kind: "push",
                key: "HTTP 500 on PUT x".into(),
                detail: "boom".into(),
                at: Duration::ZERO,
            },
        ];
        let head = ReportHead {
            workload: "mixed".into(),
            url: "http://x".into(),
            upstream: None,
            mirror_path: None,
            repo: "r".into(),
            concurrency: 2,
            size: Some(1_000_000),
            chunk: None,
            seed: 1,
            distinct_blobs: None,
        };
        let r = Report::build(head, &samples, &failures, Duration::from_secs(10), Duration::ZERO, None);
        assert_eq!(r.total.kind, "all");
        assert_eq!(r.total.requests, 102);
        assert_eq!(r.total.errors, 2);
        assert!((r.total.req_per_s - 10.0).abs() < 1e-9);
        assert!((r.total.mb_per_s - 10.0).abs() < 1e-9);
        let l = r.total.latency_ms.as_ref().unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(r.by_kind.len(), 2);
        assert_eq!(r.by_kind[1].kind, "push");
        assert_eq!(r.by_kind[1].requests, 12);
        assert_eq!(r.errors["HTTP 500 on PUT x"], 2);
        assert!(r.render().contains("HTTP 500 on PUT x"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["total"]["errors"], 2);
    }

    #[test]
    fn single_kind_names_the_total() {
        let samples = vec![sample("pull", 5, 10)];
        let head = ReportHead {
            workload: "pull".into(),
            url: "u".into(),
            upstream: None,
            mirror_path: None,
            repo: "r".into(),
            concurrency: 1,
            size: None,
            chunk: None,
            seed: 0,
            distinct_blobs: None,
        };
        let r = Report::build(head, &samples, &[], Duration::from_secs(1), Duration::ZERO, None);
        assert_eq!(r.total.kind, "pull");
        assert!(r.by_kind.is_empty());
        assert!(r.total.ttfb_ms.is_none());
    }
}
