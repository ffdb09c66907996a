//! `estate-gateway alerts --follow` against the real binary (issue 15: it printed one line
//! per repeat, never reconnected and ignored resync).
//!
//! - an alarm repeated several times is one line, not one per repeat; its acknowledgement
//!   is a line carrying the folded count;
//! - the gateway killed and restarted on the same API port and data dir: the follower
//!   says on stderr that it lost the gateway, reconnects, prints nothing for the alert
//!   that did not change, and shows a close made after the restart;
//! - Ctrl-C (SIGINT) ends it with success.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{get_json, Broker, Gateway, TestEnv};

const TOKEN: &str = "test-token-15f0";

/// How many times the smoke detector reports its alarm.
const REPEATS: u64 = 6;

/// The follower's two pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipe {
    Stdout,
    Stderr,
}

/// `estate-gateway alerts --follow --api …` as a child process; its lines as they come
/// (one reader thread per pipe). Killed on drop.
struct Follower {
    child: Child,
    rx: mpsc::Receiver<(Pipe, String)>,
    /// Every line so far, in arrival order per pipe.
    seen: Vec<(Pipe, String)>,
}

impl Follower {
    fn start(api: SocketAddr) -> Follower {
        let mut child = Command::new(common::GATEWAY_BIN)
            .args(["alerts", "--follow", "--api", &format!("http://{api}")])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn estate-gateway alerts --follow");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Pipe::Stdout, line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send((Pipe::Stderr, line));
            }
        });
        Follower {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The lines of `pipe` so far.
    fn lines(&self, pipe: Pipe) -> Vec<&str> {
        self.seen
            .iter()
            .filter(|(p, _)| *p == pipe)
            .map(|(_, l)| l.as_str())
            .collect()
    }

    /// Waits (at most `timeout`) for a line on `pipe`, after the `after`-th line of that
    /// pipe, that `pred` accepts: its index among that pipe's lines, and the line.
    fn wait_line(
        &mut self,
        pipe: Pipe,
        after: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((i, l)) = self
                .lines(pipe)
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, l)| pred(l))
            {
                return (i, (*l).to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {timeout:?}; the follower printed:\n{self}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!("the follower exited ({status:?}) before {what}:\n{self}")
                }
            }
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        common::wait_child(&mut self.child, timeout)
    }
}

impl std::fmt::Display for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (p, l) in &self.seen {
            writeln!(f, "{}: {l}", if *p == Pipe::Stdout { "out" } else { "err" })?;
        }
        Ok(())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/api/alerts` until the open `SMOKE.ALARM` alert has folded `count` reports.
async fn wait_smoke_count(gw: &mut Gateway, count: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json(gw.api, "/api/alerts").await;
        let smoke = v["alerts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["code"] == "SMOKE.ALARM"))
            .cloned();
        if let Some(s) = smoke.filter(|s| s["count"].as_u64() == Some(count)) {
            return s;
        }
        if let Some(status) = gw.try_exit_status() {
            panic!("gateway exited ({status})\n{}", gw.log_tail(60));
        }
        assert!(
            Instant::now() < deadline,
            "no SMOKE.ALARM alert with count {count} within 30 s; last /api/alerts: {v:#}\n{}",
            gw.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_folds_repeats_reconnects_and_shows_changes_after_a_restart() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let config = common::write_config_with(&env, &format!("\n[api]\ntoken = {TOKEN:?}\n"));
    let mut gw = Gateway::start(&config, &env.data_dir(), &env.log_path()).expect("starts");
    gw.wait_subscribed().await;
    let api = gw.api;

    let mut follower = Follower::start(api);
    let wait = Duration::from_secs(30);
    // Printed once the stream is open: from here every change reaches the follower.
    follower.wait_line(Pipe::Stdout, 0, "the following line", wait, |l| {
        l.starts_with("-- following changes")
    });

    // The smoke detector reports its alarm REPEATS times: one alert, counted.
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id);
    for seq in 1..=REPEATS {
        publisher
            .publish(&topic, format!(r#"{{"code":"SMOKE.ALARM","seq":{seq}}}"#))
            .await;
    }
    let smoke = wait_smoke_count(&mut gw, REPEATS).await;
    let id = smoke["id"].as_str().expect("id").to_owned();

    // Acknowledged: a line. The stream is in order, so once it is printed every repeat
    // before it has reached the follower.
    post(
        api,
        &format!("/api/alerts/{id}/ack"),
        r#"{"by":"wang","note":"on my way"}"#,
    )
    .await;
    let (acked_at, acked) =
        follower.wait_line(Pipe::Stdout, 0, "the acknowledgement line", wait, |l| {
            l.contains(&id) && l.contains("acknowledged by wang")
        });
    assert!(acked.contains(&format!("×{REPEATS}")), "{acked}");
    let before: Vec<&str> = follower.lines(Pipe::Stdout)[..acked_at]
        .iter()
        .copied()
        .filter(|l| l.contains(&id))
        .collect();
    assert_eq!(
        before.len(),
        1,
        "one line for the alarm, not one per repeat:\n{follower}"
    );
    assert!(
        before[0].contains("active: SMOKE.ALARM") && before[0].contains("smoke-1-1-3"),
        "{follower}"
    );

    // The gateway dies; the follower says so on stderr and keeps retrying.
    gw.kill();
    let (lost_at, lost) = follower.wait_line(Pipe::Stderr, 0, "the lost line", wait, |l| {
        l.starts_with(&format!("lost the gateway at http://{api}: "))
    });
    assert!(lost.ends_with("; retrying in 0.5 s"), "{lost}");

    // Back on the same port and data dir: the follower reconnects and resyncs.
    let mut gw =
        Gateway::start_on(&config, &env.data_dir(), &env.log_path(), api).expect("restarts");
    follower.wait_line(Pipe::Stderr, lost_at, "the reconnected line", wait, |l| {
        l == "-- reconnected --"
    });
    assert_eq!(
        get_json(api, &format!("/api/alerts/{id}")).await["status"],
        "acknowledged",
        "{}",
        gw.log_tail(40)
    );

    // A close made after the restart shows, once; the unchanged acknowledged alert
    // printed nothing on the way (the resync folds it).
    post(
        api,
        &format!("/api/alerts/{id}/close"),
        r#"{"by":"li","disposition":"false_alarm","note":"burnt toast"}"#,
    )
    .await;
    let (closed_at, closed) =
        follower.wait_line(Pipe::Stdout, acked_at + 1, "the close line", wait, |l| {
            l.contains(&id)
        });
    assert!(
        closed.contains("closed (false_alarm) by li"),
        "the first line after the acknowledgement is the close:\n{follower}"
    );
    assert!(gw.try_exit_status().is_none(), "{}", gw.log_tail(40));

    // Ctrl-C ends the follower cleanly, and nothing more was printed for the alert.
    let status = Command::new("kill")
        .args(["-INT", &follower.child.id().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success());
    let exit = follower.wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit {exit:?}:\n{follower}"
    );
    while let Ok(line) = follower.rx.recv_timeout(Duration::from_secs(5)) {
        follower.seen.push(line);
    }
    let after: Vec<&str> = follower.lines(Pipe::Stdout)[closed_at + 1..]
        .iter()
        .copied()
        .filter(|l| l.contains(&id))
        .collect();
    assert!(after.is_empty(), "the close is printed once:\n{follower}");
}

/// `POST path` with the token: the answer, which must be 200.
async fn post(addr: SocketAddr, path: &str, body: &str) -> Value {
    let (status, v) = common::post_json(addr, path, Some(TOKEN), body).await;
    assert_eq!(status, 200, "POST {path}: {v}");
    v
}
