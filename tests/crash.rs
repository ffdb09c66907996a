//! A power cut or OOM kill (SIGKILL) in the middle of a QoS 1 stream loses nothing: every
//! message the broker acknowledged to the publisher reaches the city platform after the
//! gateway restarts on the same data dir. Duplicates are allowed (at-least-once).
//!
//! Runs against the external broker when `ESTATE_TEST_MQTT` is set, the embedded one
//! otherwise: the broker must keep the gateway's persistent session and redeliver what
//! the gateway had not acknowledged.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use estate_sim::publish;
use tokio_util::sync::CancellationToken;

use common::{Broker, TestEnv};

const COUNT: u64 = 10_000;
/// Kill when this many events (counted over all runs) have been committed.
const KILL_AT: [u64; 3] = [1_500, 4_000, 7_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_survive_sigkill_mid_stream() {
    let t0 = Instant::now();
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    env.down_alert_after = "1h".into();
    let city = env.city().await;
    let mut gw = env.start_gateway();
    let epoch = gw.store_epoch;
    gw.wait_subscribed().await;

    let mut opts = env.publish_options(COUNT, 20);
    opts.rate = Some(3_000.0);
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish::run_until(opts, stop.clone()));

    // Committed events of the runs killed so far (a lower bound: the last poll before
    // each kill).
    let mut committed_before = 0u64;
    for kill_at in KILL_AT {
        let need = kill_at.saturating_sub(committed_before);
        let m = gw
            .wait_metrics(
                &format!("{kill_at} events committed over all runs"),
                Duration::from_secs(90),
                |m| m.n("estate_store_committed_total", &[]) >= need,
            )
            .await;
        let committed = m.n("estate_store_committed_total", &[]);
        gw.kill();
        committed_before += committed;
        eprintln!(
            "SIGKILLed the gateway after {committed} commits in this run ({committed_before} in all) at {:.2}s",
            t0.elapsed().as_secs_f64()
        );
        gw = env.start_gateway();
        assert_eq!(gw.store_epoch, epoch, "the store survives a SIGKILL");
    }

    let report = tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finishes within 120 s")
        .expect("publisher task")
        .expect("publisher runs");
    eprintln!("published: {report}");
    assert!(
        report.acked > 0 && report.acked_seqs.len() as u64 == report.acked,
        "{report}"
    );

    let acked = report.acked_seqs.clone();
    let r = match city
        .wait_for(
            |r| r.missing_device_seqs(&acked).is_empty(),
            Duration::from_secs(120),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let r = city.report();
            let missing = r.missing_device_seqs(&acked);
            panic!(
                "{} acked device seqs never arrived upstream (first: {:?}): {e:#}\n{}",
                missing.len(),
                &missing[..missing.len().min(20)],
                gw.diagnostics().await
            )
        }
    };
    // Duplicates: the same device message under several gateway seqs (committed, then
    // redelivered by the broker because its PUBACK was lost with the process), plus the
    // same gateway seq received twice (forwarded again after a restart).
    let mut per_device_seq: HashMap<u64, u32> = HashMap::new();
    for e in &r.received {
        if let Some(s) = e.device_seq {
            *per_device_seq.entry(s).or_default() += 1;
        }
    }
    let redelivered: u64 = per_device_seq.values().map(|n| u64::from(n - 1)).sum();
    eprintln!(
        "city: {r}; {redelivered} device messages stored more than once; {:.1}s in all",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(r.streams.len(), 1, "one store epoch: {:?}", r.streams);
    assert!(
        r.gaps.is_empty(),
        "no gateway seq lost (duplicates: {} seqs re-sent, {redelivered} messages re-stored): gaps {:?}",
        r.duplicates,
        r.gaps
    );
    assert_eq!(r.decode_errors + r.inconsistent_batches, 0, "{r}");
    assert_eq!(r.wrong_lane, 0, "{r}");
    city.shutdown().await;
}
