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

/// [`run_gateway_cli`] with `input` on standard input (e.g. `users add --password-stdin`).
pub fn run_gateway_cli_with_input(args: &[&str], input: &str) -> (ExitStatus, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(GATEWAY_BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn estate-gateway");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
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

/// `estate-gateway users --data-dir DIR add NAME --role ROLE --password-stdin`; panics
/// unless it succeeds.
pub fn add_user(data_dir: &Path, name: &str, role: &str, password: &str) {
    let dir = data_dir.display().to_string();
    let (status, out, err) = run_gateway_cli_with_input(
        &[
            "users",
            "--data-dir",
            &dir,
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert!(status.success(), "users add {name}: {out}{err}");
}
