//! What sled costs in memory for the store's layout: `cargo bench -p estate-gateway
//! --bench store_layout`.
//!
//! While a large backlog drains (read in order, deleted once forwarded) memory follows the
//! number of sled keys (docs/footprint.md). This bench isolates sled: in a fresh child
//! process per step it fills a tree with `BENCH_EVENTS` (1,000,000) events of 400 bytes,
//! then, in another fresh process, opens it and drains it the way the forwarder and writer
//! do (range-read ~200 KB, delete what was read in one batch, flush). It reports the peak
//! RSS of the fill, RSS after open and the peak while draining (VmHWM of the child), each
//! as a ratio to the first row, measured in the same run:
//!
//! - `E` events per record committed in groups of 256 events with a flush, as the writer
//!   does under load: `E` = 1 (the baseline; also with a 64 KiB instead of an 8 MiB
//!   `cache_capacity`, which shows the cache size is not what holds the memory), 16, 64;
//! - two events per commit, one record each, as a steady 1,000 events/s arrives: as
//!   written, and packed the way the writer packs a backlogged lane (every 8 events,
//!   3.2 KiB, written again as one record, the small ones removed in the same batch).

use std::process::Command;
use std::time::Instant;

const VALUE: usize = 400;
const READ_BYTES: usize = 200_000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open(dir: &str, cache: u64) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache)
        .open()
        .expect("open sled");
    let tree = db.open_tree("lane").expect("open tree");
    (db, tree)
}

/// Child: fill `dir` with `n` events, `per` per record, `group` events per commit; with
/// `pack` > 0 (and `per` = 1), every `pack` events are written again as one record.
fn fill(dir: &str, n: u64, per: u64, cache: u64, group: u64, pack: u64) {
    let (db, tree) = open(dir, cache);
    let record = |events: u64| [7u8; VALUE].repeat(events as usize);
    let mut seq = 0;
    let mut tail = Vec::new();
    while seq < n {
        let mut batch = sled::Batch::default();
        for _ in 0..(group / per).max(1) {
            seq += per;
            if pack == 0 {
                batch.insert(&seq.to_be_bytes(), record(per));
                continue;
            }
            tail.push(seq);
            if tail.len() as u64 >= pack {
                for k in tail.drain(..) {
                    batch.remove(&k.to_be_bytes());
                }
                batch.insert(&seq.to_be_bytes(), record(pack));
            } else {
                batch.insert(&seq.to_be_bytes(), record(per));
            }
        }
        tree.apply_batch(batch).expect("apply");
        db.flush().expect("flush");
    }
    println!("{}", status_kb("VmHWM"));
}

/// Child: open `dir` and drain it; prints RSS after open, peak RSS, and milliseconds.
fn drain(dir: &str, cache: u64) {
    let (db, tree) = open(dir, cache);
    let after_open = status_kb("VmRSS");
    let started = Instant::now();
    let mut cursor = 0u64;
    loop {
        let mut keys = Vec::new();
        let mut bytes = 0;
        for kv in tree.range((cursor + 1).to_be_bytes()..) {
            let (k, v) = kv.expect("read");
            bytes += v.len();
            keys.push(k);
            if bytes >= READ_BYTES {
                break;
            }
        }
        let Some(last) = keys.last() else { break };
        cursor = u64::from_be_bytes(last.as_ref().try_into().expect("8-byte key"));
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        tree.apply_batch(batch).expect("apply");
        db.flush().expect("flush");
    }
    println!(
        "{after_open} {} {}",
        status_kb("VmHWM"),
        started.elapsed().as_millis()
    );
}

fn child(args: &[&str]) -> Vec<u64> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("child")
        .args(args)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

struct Row {
    label: String,
    fill_peak_kb: u64,
    after_open_kb: u64,
    drain_peak_kb: u64,
    drain_ms: u64,
}

fn measure(label: &str, n: u64, per: u64, cache: u64, group: u64, pack: u64) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let path = path.to_str().expect("utf-8 path");
    let arg = |v: u64| v.to_string();
    let f = child(&[
        "fill",
        path,
        &arg(n),
        &arg(per),
        &arg(cache),
        &arg(group),
        &arg(pack),
    ]);
    let d = child(&["drain", path, &arg(cache)]);
    Row {
        label: label.to_string(),
        fill_peak_kb: f[0],
        after_open_kb: d[0],
        drain_peak_kb: d[1],
        drain_ms: d[2],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let num = |i: usize| args[i].parse::<u64>().expect("number");
        match args[2].as_str() {
            "fill" => fill(&args[3], num(4), num(5), num(6), num(7), num(8)),
            "drain" => drain(&args[3], num(4)),
            other => panic!("unknown step {other}"),
        }
        return;
    }
    let n = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("store layout bench: {n} events of {VALUE} B, sled 0.34, fresh process per step");
    let base = measure("1 event/record, 256/commit", n, 1, 8 << 20, 256, 0);
    let rows = [
        measure("same, cache 64 KiB", n, 1, 64 << 10, 256, 0),
        measure("16 events/record, 256/commit", n, 16, 8 << 20, 256, 0),
        measure("64 events/record, 256/commit", n, 64, 8 << 20, 256, 0),
        measure("1 event/record, 2/commit", n, 1, 8 << 20, 2, 0),
        measure("2/commit, packed to 8", n, 1, 8 << 20, 2, 8),
    ];
    println!(
        "{:<34} {:>14} {:>14} {:>16} {:>10}",
        "layout", "RSS peak, fill", "RSS after open", "RSS peak, drain", "drain"
    );
    for r in std::iter::once(&base).chain(rows.iter()) {
        println!(
            "{:<34} {:>11} kB {:>11} kB {:>13} kB {:>7} ms   ratio to row 1: fill {:.2}, open {:.2}, drain {:.2}",
            r.label,
            r.fill_peak_kb,
            r.after_open_kb,
            r.drain_peak_kb,
            r.drain_ms,
            r.fill_peak_kb as f64 / base.fill_peak_kb.max(1) as f64,
            r.after_open_kb as f64 / base.after_open_kb.max(1) as f64,
            r.drain_peak_kb as f64 / base.drain_peak_kb.max(1) as f64,
        );
    }
}
