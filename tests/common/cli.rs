//! The gateway's CLI subcommands run to completion.

#[allow(unused_imports)]
use super::*;

/// Runs `estate-gateway ARGS…` to completion (60 s at most): exit status, stdout, stderr.
pub fn run_gateway_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(GATEWAY_BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn estate-gateway");
    if wait_child(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for `child` to exit, at most `timeout`: its status, or `None` while it still runs.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().ok().flatten() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
