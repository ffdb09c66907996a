//! Issue 16: Hikvision ISAPI cameras that push their alarms over HTTP
//! (`[ingest.camera_push]`). The documented samples (`tests/fixtures/isapi/`), posted over
//! real HTTP to a started gateway, reach the city as the events the camera JSON format
//! raises (repeats folded, cleared after silence, the keep-alive a heartbeat; the JSON
//! sample too), the multipart one with its JPEG in the raw bytes; wrong credentials (basic, and digest
//! through curl's own challenge/response) get 401 and store nothing; an oversized body
//! gets 413; malformed bodies are dead-lettered, answered 200 and counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use estate_protocols::pb;

use common::{http_request_bytes, reserve_port, Broker, EventTap, Gateway, TestEnv};

const ACTIVE: i32 = pb::EventState::Active as i32;
const CLEARED: i32 = pb::EventState::Cleared as i32;

/// `cameras:Hik-12345`, base64.
const BASIC_OK: &str = "Basic Y2FtZXJhczpIaWstMTIzNDU=";
/// `cameras:hik-12345` (wrong case), base64.
const BASIC_WRONG: &str = "Basic Y2FtZXJhczpoaWstMTIzNDU=";

const ISAPI_PATH: &str = "/ISAPI/Event/notification/alertStream";

fn sample(name: &str) -> Vec<u8> {
    let path = common::workspace_root()
        .join("tests/fixtures/isapi")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The test's config with a camera push on `port` and `push` keys added to its table,
/// and the cameras of the samples as devices.
fn start(env: &TestEnv, port: u16, push: &str, ingest: &str) -> Gateway {
    let extra = format!(
        r#"
[ingest]
{ingest}

[ingest.camera_push]
listen = "127.0.0.1:{port}"
users = [{{ name = "cameras", password = "Hik-12345" }}]
{push}

[[devices]]
id = "pcam-b2-shed"
kind = "camera"
source = {{ name = "camera-push", id = "bc:ad:28:5f:31:0a/1" }}
location = {{ building = "2", zone = "bike shed" }}

[[devices]]
id = "pcam-north-gate"
kind = "camera"
source = {{ name = "camera-push", id = "44:19:b6:6d:24:85/1" }}
location = {{ zone = "north gate" }}

[[devices]]
id = "pcam-east-fence"
kind = "camera"
source = {{ name = "camera-push", id = "44:19:b6:6d:24:9c/1" }}

[[devices]]
id = "pcam-b4-lobby"
kind = "camera"
source = {{ name = "camera-push", id = "c0:56:e3:a1:07:4e/1" }}
location = {{ building = "4" }}
"#
    );
    common::start_gateway_with(env, &extra)
}

/// POSTs `body` as `content_type` with an optional `Authorization`: status, headers, body.
async fn post(
    addr: SocketAddr,
    content_type: &str,
    body: Vec<u8>,
    authorization: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut headers = vec![("content-type", content_type)];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    let (status, headers, body) = http_request_bytes(addr, "POST", ISAPI_PATH, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("POST to the camera push: {e:#}"));
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// curl's own digest client (`--digest`) posting a sample: the HTTP status it ended with.
async fn curl_digest(port: u16, user_password: &str, file: &str) -> u16 {
    let path = common::workspace_root()
        .join("tests/fixtures/isapi")
        .join(file);
    let url = format!("http://127.0.0.1:{port}{ISAPI_PATH}");
    let user_password = user_password.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["--noproxy", "*", "--digest", "-u", &user_password])
            .args(["-H", "Content-Type: application/xml"])
            .arg("--data-binary")
            .arg(format!("@{}", path.display()))
            .arg(&url)
            .output()
    })
    .await
    .expect("curl task")
    .unwrap_or_else(|e| panic!("run curl (scripts/test.sh installs it): {e}"));
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    code.parse().unwrap_or_else(|_| {
        panic!(
            "curl printed {code:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The events of each device in seq order, duplicates (resends) removed.
fn by_device(
    events: &[(String, pb::Event)],
) -> std::collections::BTreeMap<String, Vec<(String, pb::Event)>> {
    let mut seen = std::collections::HashSet::new();
    let mut sorted: Vec<&(String, pb::Event)> =
        events.iter().filter(|(_, e)| seen.insert(e.seq)).collect();
    sorted.sort_by_key(|(_, e)| e.seq);
    let mut out: std::collections::BTreeMap<String, Vec<(String, pb::Event)>> = Default::default();
    for (topic, e) in sorted {
        out.entry(e.device_id.clone())
            .or_default()
            .push((topic.clone(), e.clone()));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_samples_reach_the_city_as_the_camera_events() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let port = reserve_port();
    // Room for the multipart sample's XML and JPEG in the raw bytes (the default 2 KiB
    // keeps the XML only).
    let mut gw = start(
        &env,
        port,
        "auth = \"basic\"\nclear_after = \"2s\"",
        "raw_limit = \"8 KiB\"",
    );
    gw.wait_connected().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let posts: Vec<(&str, &str)> = vec![
        ("vmd.xml", "application/xml"),
        ("fielddetection.xml", "application/xml; charset=\"UTF-8\""),
        // A repeat while the intrusion lasts: folded, no second event.
        ("fielddetection.xml", "application/xml"),
        ("shelteralarm.xml", "text/xml"),
        ("videoloss.xml", "application/xml"),
        ("videoloss-heartbeat.xml", "application/xml"),
        // A firmware set to JSON.
        ("parking.json", "application/json"),
        (
            "linedetection-multipart.bin",
            "multipart/form-data; boundary=MIME_boundary",
        ),
    ];
    for (file, content_type) in &posts {
        let (status, _, body) = post(addr, content_type, sample(file), Some(BASIC_OK)).await;
        assert_eq!((status, body.trim()), (200, "OK"), "{file}");
    }

    let expected: Vec<(&str, Vec<(&str, i32)>)> = vec![
        (
            "pcam-b2-shed",
            vec![("VID.MOTION", ACTIVE), ("VID.MOTION", CLEARED)],
        ),
        (
            "pcam-east-fence",
            vec![("VID.INTRUSION", ACTIVE), ("VID.INTRUSION", CLEARED)],
        ),
        (
            "pcam-b4-lobby",
            vec![("VID.TAMPER", ACTIVE), ("VID.TAMPER", CLEARED)],
        ),
        // Not in [[devices]]: accepted under the source's name, never dropped.
        (
            "camera-push.c0_6d_ed_02_d3_d9_5",
            vec![("VID.LOSS", ACTIVE), ("VID.LOSS", CLEARED)],
        ),
        // The NVR's keep-alive (`videoloss` inactive, nothing open).
        (
            "camera-push.c0_6d_ed_02_d3_d9",
            vec![("DEV.HEARTBEAT", ACTIVE)],
        ),
        (
            "camera-push.44_19_b6_71_0e_3f_1",
            vec![("VID.FIRE_LANE", ACTIVE), ("VID.FIRE_LANE", CLEARED)],
        ),
        // Momentary: raised once, ends silently.
        ("pcam-north-gate", vec![("VID.LINE_CROSS", ACTIVE)]),
    ];
    let want = expected.clone();
    let events = tap
        .wait_for(
            "every pushed alarm, the stateful ones cleared after 2 s of silence (longer than a slow commit between the two fielddetection posts)",
            Duration::from_secs(30),
            move |events| {
                let by = by_device(events);
                want.iter()
                    .all(|(d, codes)| by.get(*d).is_some_and(|got| got.len() >= codes.len()))
            },
        )
        .await;
    let by = by_device(&events);
    for (device, codes) in &expected {
        let got: Vec<(&str, i32)> = by[*device]
            .iter()
            .map(|(_, e)| (e.code.as_str(), e.state))
            .collect();
        assert_eq!(&got, codes, "{device}: events in order, the repeat folded");
    }
    let first = |device: &str| by[device][0].clone();
    let (topic, intrusion) = first("pcam-east-fence");
    assert!(
        topic.ends_with("/alarms"),
        "an intrusion is severity 2: {topic}"
    );
    assert_eq!(intrusion.severity, 2);
    let source = intrusion.source.clone().unwrap_or_default();
    assert_eq!(
        (source.protocol.as_str(), source.reference.as_str()),
        ("http", "camera-push:127.0.0.1")
    );
    let (topic, motion) = first("pcam-b2-shed");
    assert!(topic.ends_with("/events"), "motion is severity 4: {topic}");
    let location = motion.location.clone().unwrap_or_default();
    assert_eq!(
        (location.building.as_str(), location.zone.as_str()),
        ("2", "bike shed")
    );
    // 2026-12-04T21:03:17+08:00, the camera's own clock.
    assert_eq!(motion.device_time_ms, Some(1_796_389_397_000));
    assert_eq!(
        motion.raw,
        sample("vmd.xml"),
        "a plain body is the raw bytes"
    );
    let (_, loss) = first("camera-push.c0_6d_ed_02_d3_d9_5");
    assert!(!loss.registered);
    assert_eq!(loss.device_kind, pb::DeviceKind::Camera as i32);

    // The multipart alarm keeps its snapshot, byte for byte, in a MIME entity.
    let (_, cross) = first("pcam-north-gate");
    assert!(!cross.raw_truncated, "8 KiB hold the XML and the JPEG");
    assert!(cross
        .raw
        .starts_with(b"Content-Type: multipart/mixed; boundary="));
    assert!(
        contains(&cross.raw, &sample("linedetection.jpg")),
        "the JPEG is in the raw bytes"
    );
    assert!(contains(
        &cross.raw,
        b"<eventType>linedetection</eventType>"
    ));
    assert!(contains(&cross.raw, b"Content-Type: image/jpeg"));

    let m = gw
        .wait_metrics("every push counted", Duration::from_secs(10), |m| {
            m.n(
                "estate_camera_push_requests_total",
                &[("result", "accepted")],
            ) == posts.len() as u64
        })
        .await;
    assert_eq!(
        m.n("estate_camera_push_images_total", &[("result", "kept")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(m.n("estate_dead_lettered_total", &[]), 0, "{}", m.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_get_401_and_store_nothing_and_a_real_digest_exchange_works() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let port = reserve_port();
    let mut gw = start(
        &env,
        port,
        "auth = \"basic-or-digest\"\nmax_body = \"64 KiB\"",
        "",
    );
    gw.wait_connected().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // Missing and wrong basic credentials: 401 with both challenges.
    for authorization in [None, Some(BASIC_WRONG)] {
        let (status, headers, _) = post(
            addr,
            "application/xml",
            sample("shelteralarm.xml"),
            authorization,
        )
        .await;
        assert_eq!(status, 401, "{authorization:?}");
        let challenges: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert!(
            challenges[0].starts_with(
                "Digest realm=\"estate-gateway\", qop=\"auth\", algorithm=MD5, nonce=\""
            ),
            "{challenges:?}"
        );
        assert_eq!(
            challenges[1],
            "Basic realm=\"estate-gateway\", charset=\"UTF-8\""
        );
    }
    // curl answers the real challenge with a wrong password: refused.
    assert_eq!(
        curl_digest(port, "cameras:hik-12345", "shelteralarm.xml").await,
        401
    );
    // An oversized body is refused before it is read (the right password: 413, not 401).
    let (status, _, _) = post(
        addr,
        "application/xml",
        vec![b' '; 100 * 1024],
        Some(BASIC_OK),
    )
    .await;
    assert_eq!(status, 413);

    // curl's digest exchange with the right password: accepted, committed, upstream.
    assert_eq!(curl_digest(port, "cameras:Hik-12345", "vmd.xml").await, 200);
    let events = tap
        .wait_for(
            "the motion alarm pushed with digest auth",
            Duration::from_secs(30),
            |events| events.iter().any(|(_, e)| e.device_id == "pcam-b2-shed"),
        )
        .await;
    // Nothing of the refused posts was stored: they would have been committed (and
    // forwarded) before the accepted one.
    let by = by_device(&events);
    let cameras: Vec<(&str, &str)> = by
        .values()
        .flatten()
        .filter(|(_, e)| e.code.starts_with("VID."))
        .map(|(_, e)| (e.device_id.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(cameras, vec![("pcam-b2-shed", "VID.MOTION")]);
    let m = gw.metrics().await.expect("metrics");
    // Wrong: the basic and curl's digest with the wrong password.
    assert_eq!(
        m.n(
            "estate_camera_push_requests_total",
            &[("result", "unauthorized")]
        ),
        2,
        "{}",
        m.summary()
    );
    // No credentials: the first post, and the first leg of each of curl's exchanges.
    assert_eq!(
        m.n(
            "estate_camera_push_requests_total",
            &[("result", "challenged")]
        ),
        3,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n(
            "estate_camera_push_requests_total",
            &[("result", "too_large")]
        ),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n(
            "estate_camera_push_requests_total",
            &[("result", "accepted")]
        ),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(m.n("estate_dead_lettered_total", &[]), 0, "{}", m.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pushes_are_dead_lettered_counted_and_answered_200() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let port = reserve_port();
    let mut gw = start(&env, port, "auth = \"basic\"", "");
    gw.wait_connected().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let whole = sample("fielddetection.xml");
    let cut_at = String::from_utf8_lossy(&whole)
        .find("<DetectionRegionList>")
        .expect("tag");
    let jpeg_only = [
        &b"--b\r\nContent-Disposition: form-data; name=\"img\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"[..],
        &sample("linedetection.jpg"),
        b"\r\n--b--\r\n",
    ]
    .concat();
    let bad: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            whole[..cut_at].to_vec(),
            "application/xml",
            "bad_xml: isapi-xml: the body ends before </EventNotificationAlert>",
        ),
        (
            String::from_utf8_lossy(&sample("vmd.xml"))
                .replace(">VMD<", ">faceSnap<")
                .into_bytes(),
            "application/xml",
            "bad_field: isapi-xml: field \"eventType\": \"faceSnap\" is not a known event type",
        ),
        (
            jpeg_only,
            "multipart/form-data; boundary=b",
            "bad_xml: isapi-xml: multipart body without an XML or JSON part (1 parts: image/jpeg)",
        ),
    ];
    for (body, content_type, reason) in &bad {
        let (status, _, answer) = post(addr, content_type, body.clone(), Some(BASIC_OK)).await;
        assert_eq!(
            status, 200,
            "a camera would resend a refused body forever: {answer}"
        );
        assert!(answer.starts_with("dead-lettered: "), "{answer}");
        assert!(answer.contains(reason), "{answer}\nshould contain {reason}");
    }
    // The listener goes on: a good alarm after them is stored and forwarded.
    let (status, _, _) = post(
        addr,
        "application/xml",
        sample("shelteralarm.xml"),
        Some(BASIC_OK),
    )
    .await;
    assert_eq!(status, 200);
    tap.wait_for(
        "the tamper alarm after the malformed ones",
        Duration::from_secs(30),
        |events| {
            events
                .iter()
                .any(|(_, e)| e.device_id == "pcam-b4-lobby" && e.code == "VID.TAMPER")
        },
    )
    .await;
    let m = gw.metrics().await.expect("metrics");
    assert_eq!(
        m.n("estate_dead_lettered_total", &[("reason", "bad_xml")]),
        2,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_dead_lettered_total", &[("reason", "bad_field")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n(
            "estate_camera_push_requests_total",
            &[("result", "dead_lettered")]
        ),
        3,
        "{}",
        m.summary()
    );

    // The dead letters keep the bodies and say what was wrong. SIGTERM stops the camera
    // push with ingest, in order: exit 0.
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway stops on SIGTERM with exit 0: {status:?}\n{}",
        gw.log_tail(30)
    );
    let path = env.dir().join("gateway.toml");
    let cfg = estate_config::Config::load(&path).expect("config");
    let (_, reader, _writer) = estate_gateway::store::open(
        &env.data_dir().join("store"),
        estate_gateway::store::StoreOptions::from_config(&cfg),
        std::sync::Arc::new(estate_gateway::telemetry::Metrics::new()),
    )
    .expect("open the store after the gateway stopped");
    let letters = reader.dead_letters(100).expect("dead letters");
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for (body, _, reason) in &bad {
        let letter = letters
            .iter()
            .find(|l| l.reason.contains(reason))
            .unwrap_or_else(|| panic!("no dead letter says {reason}: {letters:?}"));
        assert_eq!(letter.source, "camera-push:127.0.0.1");
        assert_eq!(letter.original_len, body.len());
        assert!(
            body.starts_with(&letter.raw),
            "the raw bytes are the body's"
        );
    }
}

/// A camera push port that is taken fails the start with a message naming it, instead of
/// a gateway that runs without the cameras.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_camera_push_port_fails_the_start_naming_it() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let extra = format!("\n[ingest.camera_push]\nlisten = \"127.0.0.1:{port}\"\nauth = \"none\"\n");
    let config = common::write_config_with(&env, &extra);
    let err =
        Gateway::start(&config, &env.data_dir(), &env.log_path()).expect_err("the port is taken");
    assert!(err.to_string().contains("exited"), "{err:#}");
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    assert!(
        log.contains(&format!("camera push listener 127.0.0.1:{port}")) && log.contains("in use"),
        "{log}"
    );
}
