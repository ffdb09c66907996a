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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
