//! What the benches share: the server started alone, a second thread and the count of
//! instructions per request under callgrind for the instruction benches, `wrk` pinned to its
//! own core for the throughput benches.

// Each bench uses a part.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;

use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, Registration};
use lifecycle_http::HttpServer;

/// Runs `server` alone in a lifecycle, through the testing kit (no signals, no hard exit), and
/// returns its address once it is ready.
pub(crate) async fn serve_alone(server: HttpServer) -> SocketAddr {
    let local = server.local_addr();
    let lifecycle = Lifecycle::builder()
        .register(Registration::new("http", server))
        .build()
        .unwrap();
    let run = TestRun::run(lifecycle);
    run.ready().await.expect("the server starts");
    local.get().unwrap()
}

/// Gives the process a second thread, idle, as every service has (a runtime's workers, its
/// blocking pool, a signal thread; lifecycle has its watchdog), unless `ONE_THREAD` is set.
/// Both sides of a comparison call it: glibc takes a faster path for each system call and
/// allocation while a process has one thread only, which would count against lifecycle-http
/// (about 240 instructions per HTTP/1 request) what no service sees.
pub(crate) fn second_thread() {
    if std::env::var_os("ONE_THREAD").is_none() {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
}

/// The environment variable `name` parsed, or `default` when it is unset or not a number.
pub(crate) fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `values` (the upper one of an even count); sorts them.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How many requests the two runs of each server make: `SMALL` and `LARGE` from the
/// environment, by default 4000 and 20000.
pub(crate) fn sizes() -> (usize, usize) {
    (env("SMALL", 4000), env("LARGE", 20000))
}

/// Instructions per request (or call) of `server`: this bench's `serve <server> <n>` mode run
/// under callgrind with `small` and then `large` requests, the difference between the counts
/// over the difference between the sizes, so that the start-up and the shutdown cancel out.
/// `CALLGRIND_OUT=<file>` keeps the last run's profile for `callgrind_annotate`.
pub(crate) fn per_request(server: &str, (small, large): (usize, usize)) -> f64 {
    let (a, b) = (instructions(server, small), instructions(server, large));
    (b - a) as f64 / (large - small) as f64
}

/// The instructions callgrind counted for one run of `serve`.
fn instructions(server: &str, requests: usize) -> u64 {
    let out = std::env::var("CALLGRIND_OUT").unwrap_or_else(|_| "/dev/null".into());
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", &format!("--callgrind-out-file={out}")])
        .arg(std::env::current_exe().unwrap())
        .args(["serve", server, &requests.to_string()])
        .output()
        .expect("valgrind is installed (apt-get install valgrind)");
    let text = String::from_utf8_lossy(&output.stderr);
    text.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output:\n{text}"))
}

/// `program` pinned with `taskset` to the core that `WRK_CPU` names, if set. Pin the bench
/// itself to another (`taskset -c 0 ...`): a child inherits its parent's pinning, so without
/// `WRK_CPU` the load would share the server's core.
pub(crate) fn pinned(program: &str) -> Command {
    match std::env::var("WRK_CPU") {
        Ok(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu, program]);
            command
        }
        Err(_) => Command::new(program),
    }
}

/// `wrk -t1 -c<connections> -d<seconds>s --latency <url>`, [`pinned`]: requests per second and
/// the 99th percentile latency in milliseconds.
pub(crate) fn wrk(url: &str, seconds: u32, connections: u32) -> (f64, f64) {
    let output = pinned("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| to_ms(v.trim()))
        .unwrap_or_else(|| panic!("no 99% latency in wrk output:\n{text}"));
    if let Some(errors) = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        eprintln!("wrk reported: {errors}");
    }
    (rps, p99)
}

/// `wrk`'s `812.00us`, `1.20ms` or `2.00s` in milliseconds.
fn to_ms(value: &str) -> f64 {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().expect("a number");
    match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        _ => panic!("unknown unit in {value}"),
    }
}
