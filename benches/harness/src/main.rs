//! `donjon-bench`: a load harness for any OCI registry reachable over HTTP/1.1, plain or TLS,
//! open or behind Basic or token (`Bearer`) authentication.

mod client;
mod gen;
mod report;
mod util;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use report::{fmt_ms, Report};
use util::{human_size, median, parse_duration, parse_size};
use workload::{MirrorPath, RunOpts, Workload};

#[derive(Parser)]
#[command(name = "donjon-bench", version, about = "Load harness for OCI registries (HTTP/1.1 and HTTPS)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Threads of the harness's own runtime [default: one per core]. With 1, every connection and
    /// its reader share one thread: no cross-thread wake-up per received frame, so a single
    /// stream costs the client far less CPU and leaves the cores to the registry under test.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload against one registry.
    Run {
        /// Registry base URL, e.g. http://127.0.0.1:5000 or https://registry.example.com (for
        /// pull-cold and pull-warm, the mirror's).
        #[arg(long)]
        url: String,
        /// Sample this process's VmRSS every 100 ms during the run and report the peak.
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Measure single-core SHA-256 throughput (sha2 crate) and the data generator's speed.
    Sha256 {
        /// Bytes to hash.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Write the results as JSON to this file.
        #[arg(long)]
        json: Option<String>,
    },
    /// Run a workload against A then B alternately (A B A B ...) and compare. For pull-cold and
    /// pull-warm, A and B are two mirrors of the same --upstream.
    Compare {
        /// Base URL of registry A (http:// or https://).
        #[arg(long)]
        a: String,
        /// Base URL of registry B (http:// or https://).
        #[arg(long)]
        b: String,
        /// How many A/B pairs to run.
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// Sample this process's VmRSS during A's runs.
        #[arg(long)]
        pid_a: Option<u32>,
        /// Sample this process's VmRSS during B's runs.
        #[arg(long)]
        pid_b: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Run a workload at several concurrency levels.
    Scale {
        /// Registry base URL (http:// or https://).
        #[arg(long)]
        url: String,
        /// Concurrency levels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
        levels: Vec<usize>,
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Concurrent workers (each with at most one request in flight).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Operations in all [default: 20 for push/pull/mixed/pull-warm, 2000 otherwise, unless
    /// --duration]. Required for pull-cold: each operation pulls its own new blob.
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Run for this long instead of a count (30s, 500ms, 2m). Not for pull-cold.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Repository to use (for pull-cold and pull-warm, the upstream's, named on the mirror as
    /// --mirror-path says).
    #[arg(long, default_value = "donjon-bench/load")]
    repo: String,
    /// For pull-cold and pull-warm: the registry the mirror at --url (or --a, --b) fetches from.
    /// Setup pushes the blobs there; --user, --password and --ca-cert apply to it too.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// For pull-cold and pull-warm: how the mirror names the upstream's repositories.
    #[arg(long, value_enum, default_value_t = MirrorPath::Same)]
    mirror_path: MirrorPath,
    /// Blob size for push, pull, mixed, pull-cold and pull-warm (1MiB, 10MiB, 100MiB, 1GiB...).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    size: u64,
    /// PATCH size for push-chunked.
    #[arg(long, default_value = "10MiB", value_parser = parse_size)]
    chunk: u64,
    /// User name: sent as Basic auth to the registry, and to the token service of a registry
    /// that asks for Bearer tokens (without it, tokens are requested anonymously).
    #[arg(long)]
    user: Option<String>,
    /// Password (or access token) for --user.
    #[arg(long, env = "DONJON_BENCH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of CA certificates (one or more) to trust for https://, besides the system's.
    /// A self-signed server certificate given here must not be marked as a CA (`openssl req
    /// -x509` needs `-addext basicConstraints=critical,CA:FALSE`): webpki refuses
    /// `CaUsedAsEndEntity`.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// For mixed: the fraction of operations that are pulls.
    #[arg(long, default_value_t = 0.9)]
    pull_ratio: f64,
    /// Seed of the generated blobs [default: from the clock, so each run pushes new blobs]. The
    /// runs of compare and scale with pull-cold move it on by --count each, so that no two runs
    /// pull the same blob.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the report as JSON to this file ("-" for stdout).
    #[arg(long)]
    json: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print every HTTP request (method, path, status, time) to stderr.
    #[arg(long)]
    trace: bool,
}

impl Common {
    /// The options of run number `run` (from 0) of this invocation. For pull-cold, the seed moves
    /// on by `--count` per run: the runs' blobs are disjoint even with an explicit `--seed`, so
    /// no mirror is ever asked twice for the same blob (with the clock, later runs start further
    /// on still).
    fn opts(&self, url: &str, pid: Option<u32>, run: u64) -> RunOpts {
        let mut seed = self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) & 0xFFFF_FFFF_FFFF
        });
        if self.workload == Workload::PullCold {
            seed = seed.wrapping_add(run.wrapping_mul(self.count.unwrap_or(0)));
        }
        RunOpts {
            url: url.to_string(),
            upstream: self.upstream.clone(),
            mirror_path: self.mirror_path,
            workload: self.workload,
            concurrency: self.concurrency,
            count: self.count,
            duration: self.duration,
            repo: self.repo.clone(),
            size: self.size,
            chunk: self.chunk,
            user: self.user.clone(),
            password: self.password.clone(),
            ca_cert: self.ca_cert.clone(),
            pid,
            pull_ratio: self.pull_ratio,
            seed,
            progress: !self.quiet,
            trace: self.trace,
        }
    }
}

fn write_json<T: Serialize>(path: &str, v: &T) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    if path == "-" {
        println!("{s}");
        Ok(())
    } else {
        std::fs::write(path, s + "\n").map_err(|e| format!("{path}: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n.max(1)).enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("donjon-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("donjon-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Run { url, pid, common } => {
            let o = common.opts(&url, pid, 0);
            let r = workload::run(&o).await?;
            print!("{}", r.render());
            if let Some(p) = &common.json {
                write_json(p, &r)?;
            }
            Ok(())
        }
        Cmd::Sha256 { size, json } => sha256(size, json.as_deref()),
        Cmd::Compare { a, b, pairs, pid_a, pid_b, common } => {
            compare(&a, &b, pairs, pid_a, pid_b, &common).await
        }
        Cmd::Scale { url, levels, pid, common } => scale(&url, &levels, pid, &common).await,
    }
}

#[derive(Serialize)]
struct Sha256Report {
    bytes: u64,
    sha_ni: bool,
    hash_mb_per_s: f64,
    generate_mb_per_s: f64,
    generate_and_hash_mb_per_s: f64,
}

fn sha256(size: u64, json: Option<&str>) -> Result<(), String> {
    use sha2::{Digest as _, Sha256};
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sha_ni = cpu.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "sha_ni"));
    let mut buf = vec![0u8; 1 << 20];
    gen::fill(1, 0, &mut buf);
    let mb = |secs: f64| size as f64 / 1e6 / secs.max(1e-9);
    // Hashing alone, over one 1 MiB buffer, fed repeatedly.
    let t = Instant::now();
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    std::hint::black_box(h.finalize());
    let hash = mb(t.elapsed().as_secs_f64());
    // Generating alone.
    let t = Instant::now();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        gen::fill(2, pos, std::hint::black_box(&mut buf[..n]));
        std::hint::black_box(&buf);
        pos += n as u64;
    }
    let generate = mb(t.elapsed().as_secs_f64());
    // Both, as the push setup does.
    let t = Instant::now();
    std::hint::black_box(gen::digest(3, size));
    let both = mb(t.elapsed().as_secs_f64());
    println!(
        "sha256 (sha2 0.11, one core) over {}: SHA-NI {}",
        human_size(size),
        if sha_ni { "yes" } else { "no" }
    );
    println!("  hash only            {hash:>9.1} MB/s");
    println!("  generate only        {generate:>9.1} MB/s");
    println!("  generate + hash      {both:>9.1} MB/s");
    println!("  => hashing 1GiB costs {:.2}s of one core", (1u64 << 30) as f64 / 1e6 / hash);
    if let Some(p) = json {
        let r = Sha256Report {
            bytes: size,
            sha_ni,
            hash_mb_per_s: hash,
            generate_mb_per_s: generate,
            generate_and_hash_mb_per_s: both,
        };
        write_json(p, &r)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Pair {
    a: Report,
    b: Report,
    throughput_ratio: f64,
    p99_ratio: Option<f64>,
}

#[derive(Serialize)]
struct CompareReport {
    workload: String,
    a: String,
    b: String,
    metric: String,
    pairs: Vec<Pair>,
    median_throughput_ratio: Option<f64>,
    median_p99_ratio: Option<f64>,
    /// Server CPU per unit of work, B over A (both PIDs given).
    median_server_cpu_ratio: Option<f64>,
}

async fn compare(
    a: &str,
    b: &str,
    pairs: usize,
    pid_a: Option<u32>,
    pid_b: Option<u32>,
    c: &Common,
) -> Result<(), String> {
    let mut out = Vec::new();
    for i in 0..pairs {
        let run = 2 * i as u64;
        let ra = workload::run(&c.opts(a, pid_a, run)).await?;
        eprint!("pair {}: A\n{}", i + 1, ra.render());
        let rb = workload::run(&c.opts(b, pid_b, run + 1)).await?;
        eprint!("pair {}: B\n{}", i + 1, rb.render());
        let throughput_ratio = rb.throughput().0 / ra.throughput().0;
        let p99_ratio = match (ra.p99_ms(), rb.p99_ms()) {
            (Some(x), Some(y)) if x > 0.0 => Some(y / x),
            _ => None,
        };
        out.push(Pair { a: ra, b: rb, throughput_ratio, p99_ratio });
    }
    let metric = out.first().map_or("req/s", |p| p.a.throughput().1);
    println!("{} : A = {a}  B = {b}", c.workload.name());
    println!(
        "{:<5} {:>12} {:>12} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "pair",
        format!("A {metric}"),
        format!("B {metric}"),
        "B/A",
        "A p99 ms",
        "B p99 ms",
        "B/A p99",
        "A err",
        "B err"
    );
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
    for (i, p) in out.iter().enumerate() {
        println!(
            "{:<5} {:>12.1} {:>12.1} {:>8.3} {:>10} {:>10} {:>8} {:>8} {:>8}",
            i + 1,
            p.a.throughput().0,
            p.b.throughput().0,
            p.throughput_ratio,
            opt(p.a.p99_ms(), fmt_ms),
            opt(p.b.p99_ms(), fmt_ms),
            opt(p.p99_ratio, |r| format!("{r:.3}")),
            p.a.total.errors,
            p.b.total.errors,
        );
    }
    let mt = median(&out.iter().map(|p| p.throughput_ratio).collect::<Vec<_>>());
    let mp = median(&out.iter().filter_map(|p| p.p99_ratio).collect::<Vec<_>>());
    println!(
        "median B/A {metric}: {}   median B/A p99: {}",
        opt(mt, |r| format!("{r:.3}")),
        opt(mp, |r| format!("{r:.3}"))
    );
    // The server's CPU per unit of work, when both PIDs were given: on a machine where the client
    // shares the cores, throughput is partly the client's; this is the server's alone.
    let cpu: Vec<_> = out.iter().filter_map(|p| Some((p.a.server_cpu()?, p.b.server_cpu()?.0))).collect();
    let cpu_ratio = (cpu.len() == out.len() && !cpu.is_empty()).then(|| {
        let unit = cpu[0].0 .1;
        println!("{:<5} {:>14} {:>14} {:>8}", "pair", format!("A {unit}"), format!("B {unit}"), "B/A");
        for (i, ((a, _), b)) in cpu.iter().enumerate() {
            println!("{:<5} {a:>14.1} {b:>14.1} {:>8.3}", i + 1, b / a);
        }
        let m = median(&cpu.iter().map(|((a, _), b)| b / a).collect::<Vec<_>>());
        println!("median B/A {unit}: {}", opt(m, |r| format!("{r:.3}")));
        m
    });
    if let Some(path) = &c.json {
        let r = CompareReport {
            workload: c.workload.name().to_string(),
            a: a.to_string(),
            b: b.to_string(),
            metric: metric.to_string(),
            pairs: out,
            median_throughput_ratio: mt,
            median_p99_ratio: mp,
            median_server_cpu_ratio: cpu_ratio.flatten(),
        };
        write_json(path, &r)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct ScaleReport {
    url: String,
    workload: String,
    levels: Vec<Report>,
}

async fn scale(url: &str, levels: &[usize], pid: Option<u32>, c: &Common) -> Result<(), String> {
    let mut reports = Vec::new();
    for (run, &level) in levels.iter().enumerate() {
        let mut o = c.opts(url, pid, run as u64);
        o.concurrency = level;
        // pull-cold needs a count, and says so.
        if o.count.is_none() && o.duration.is_none() && o.workload != Workload::PullCold {
            o.duration = Some(Duration::from_secs(10));
        }
        let r = workload::run(&o).await?;
        eprintln!("  concurrency {level}: {:.1} req/s, {} errors", r.total.req_per_s, r.total.errors);
        reports.push(r);
    }
    println!("{} against {url}", c.workload.name());
    println!(
        "{:>11} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "concurrency", "requests", "errors", "req/s", "MB/s", "p50 ms", "p99 ms", "max ms", "peak RSS"
    );
    for r in &reports {
        let l = r.total.latency_ms.as_ref();
        let p = |v: Option<f64>| v.map_or("-".to_string(), fmt_ms);
        let rss = r.rss.as_ref().and_then(|x| x.peak_kib).map_or("-".to_string(), |k| human_size(k * 1024));
        println!(
            "{:>11} {:>9} {:>7} {:>10.1} {:>9.1} {:>9} {:>9} {:>9} {:>10}",
            r.head.concurrency,
            r.total.requests,
            r.total.errors,
            r.total.req_per_s,
            r.total.mb_per_s,
            p(l.map(|x| x.p50)),
            p(l.map(|x| x.p99)),
            p(l.map(|x| x.max)),
            rss
        );
    }
    if let Some(path) = &c.json {
        let r =
            ScaleReport { url: url.to_string(), workload: c.workload.name().to_string(), levels: reports };
        write_json(path, &r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(args: &[&str]) -> Common {
        let argv = ["donjon-bench", "scale", "--url", "http://127.0.0.1:1"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Scale { common, .. } => common,
            _ => unreachable!(),
        }
    }

    #[test]
    fn mirror_flags_parse() {
        let c = common(&["--workload", "pull-warm", "--upstream", "http://127.0.0.1:2"]);
        assert_eq!(c.workload, Workload::PullWarm);
        assert_eq!(c.mirror_path, MirrorPath::Same);
        let o = c.opts("http://127.0.0.1:1", None, 0);
        assert_eq!(o.upstream.as_deref(), Some("http://127.0.0.1:2"));
        for (flag, want) in [("same", MirrorPath::Same), ("trow", MirrorPath::Trow), ("ns", MirrorPath::Ns)] {
            let c = common(&["--workload", "pull-cold", "--count", "4", "--mirror-path", flag]);
            assert_eq!(c.opts("http://x", None, 0).mirror_path, want);
        }
        assert!(Cli::try_parse_from([
            "donjon-bench",
            "run",
            "--url",
            "u",
            "--workload",
            "pull-cold",
            "--mirror-path",
            "f"
        ])
        .is_err());
    }

    #[test]
    fn cold_runs_of_one_invocation_never_share_blobs() {
        // An explicit seed: each run of compare or scale starts --count further on.
        let c = common(&["--workload", "pull-cold", "--count", "10", "--seed", "1000"]);
        let seeds: Vec<u64> = (0..4).map(|run| c.opts("http://a", None, run).seed).collect();
        assert_eq!(seeds, [1000, 1010, 1020, 1030]);
        // From the clock: every run's range [seed, seed + count) starts past the previous one's.
        let c = common(&["--workload", "pull-cold", "--count", "1000"]);
        let seeds: Vec<u64> = (0..6).map(|run| c.opts("http://a", None, run).seed).collect();
        assert!(seeds.windows(2).all(|w| w[1] >= w[0] + 1000), "{seeds:?}");
        // Other workloads keep the seed they are given.
        let c = common(&["--workload", "push-mono", "--count", "10", "--seed", "7"]);
        assert_eq!(c.opts("http://a", None, 3).seed, 7);
    }
}
