//! `[ingest.camera_push]`: an HTTP listener that Hikvision ISAPI cameras and NVRs push
//! their alarms to (the camera's "Alarm Host" / "HTTP Listening" setting), as
//! `EventNotificationAlert` XML, plain or multipart with JPEG snapshots.
//!
//! Off unless the section is present. The gateway side is `gateway/src/ingest/camera_push/`;
//! the rules are `validate/camera_push.rs`; docs/formats.md ("Camera push") and
//! docs/configuration.md describe it for the integrator.
//!
//! ```toml
//! [ingest.camera_push]
//! listen = "0.0.0.0:8089"
//! auth = "digest"
//! users = [{ name = "cameras", password_env = "ESTATE_CAMERA_PASSWORD" }]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Secret};

/// `[ingest.camera_push]`: where cameras push, who may, and how a camera becomes a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPushConfig {
    /// Required. Address and port the listener binds, e.g. `"0.0.0.0:8089"`: the camera's
    /// alarm host is this address, its URL any path (`/`, `/ISAPI/alarm`). Its own port,
    /// not `api.listen`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The source's label: in every event's `source.reference` (`{name}:{camera address}`),
    /// in dead-letter sources, in `[[devices]] source = { name = … }` and in the device id of
    /// unregistered cameras (`{name}.{camera id}`). Letters, digits, `-`, `_`; not the name
    /// of an `[[ingest.sources]]` entry. Default: `"camera-push"`.
    #[serde(default = "default_name")]
    pub name: String,
    /// How cameras authenticate: `"digest"` (RFC 7616 with MD5 and `qop="auth"`, what
    /// Hikvision firmwares use), `"basic"` (the password crosses the network in clear: a
    /// trusted camera VLAN only), `"basic-or-digest"` (both challenges are offered; each
    /// camera picks one), or `"none"` (firmwares whose HTTP listening has no credentials;
    /// then anyone who reaches `listen` can raise camera alarms). Wrong or missing
    /// credentials get `401` with the challenge. Default: `"digest"`.
    #[serde(default)]
    pub auth: PushAuth,
    /// The realm of the challenge (`WWW-Authenticate: Digest realm="…"`), part of every
    /// digest a camera computes. Printable ASCII without `"` or `\`. Default:
    /// `"estate-gateway"`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The accounts cameras sign in with: `[[ingest.camera_push.users]]` or
    /// `users = [{ name = "cam-gate", password_file = "/etc/estate-gateway/cam-gate.pass" }]`.
    /// At least one unless `auth = "none"`. One shared account for every camera is
    /// fine; one per camera lets `camera_id = "user"` tell them apart. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<PushUser>,
    /// What names a camera, i.e. the `id` of its `[[devices]] source = { name, id }`:
    /// `"mac"` — `{macAddress}/{channelID}` (`44:19:b6:6d:24:85/1`), falling back to the
    /// `ipAddress` when a firmware sends no MAC, exactly as the camera-isapi-json format
    /// names cameras, so one `[[devices]]` list serves both; `"ip"` —
    /// `{ipAddress}/{channelID}` (cameras with fixed addresses); `"user"` —
    /// `{user name}/{channelID}` (one account per camera or NVR, e.g. behind NAT, where
    /// the XML's addresses are not the camera's own). Without a channel just the first
    /// part. Default: `"mac"`.
    #[serde(default)]
    pub camera_id: CameraIdFrom,
    /// Cameras repeat an active alarm about once a second and often never send
    /// `inactive`, so an alarm is cleared after this much silence (as camera-isapi-json's
    /// `clear_after`). 1 s to 1 h. Default: `"5s"`.
    #[serde(default = "default_clear_after", with = "crate::units::duration")]
    pub clear_after: Duration,
    /// Largest request body accepted (the XML with its snapshots); a bigger one is
    /// refused with `413` before it is read. Every body is read whole into memory, and at
    /// most 16 connections are served at once, so this times 16 is the listener's memory
    /// bound. 4 KiB to 16 MiB. Default: `"2 MiB"` (a 1080p snapshot is 100–400 KiB).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

/// How cameras authenticate to the push listener (`auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushAuth {
    /// HTTP digest (RFC 7616), MD5, `qop="auth"`.
    #[default]
    Digest,
    /// HTTP basic (RFC 7617).
    Basic,
    /// Both challenges are sent; either answer is accepted.
    BasicOrDigest,
    /// No credentials asked.
    None,
}

impl PushAuth {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            PushAuth::Digest => "digest",
            PushAuth::Basic => "basic",
            PushAuth::BasicOrDigest => "basic-or-digest",
            PushAuth::None => "none",
        }
    }

    /// Digest answers are accepted.
    pub fn digest(self) -> bool {
        matches!(self, PushAuth::Digest | PushAuth::BasicOrDigest)
    }

    /// Basic answers are accepted.
    pub fn basic(self) -> bool {
        matches!(self, PushAuth::Basic | PushAuth::BasicOrDigest)
    }
}

/// What names a pushing camera (`camera_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraIdFrom {
    /// `{macAddress}/{channelID}`, or the `ipAddress` without a MAC.
    #[default]
    Mac,
    /// `{ipAddress}/{channelID}`.
    Ip,
    /// `{authenticated user}/{channelID}`.
    User,
}

/// One `[[ingest.camera_push.users]]` account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushUser {
    /// Required. The user name the camera is configured with. Not empty, no `:`
    /// (basic auth cannot carry one), no `"` or `\`; unique.
    pub name: String,
    /// The password. Prefer `password_file` or `password_env` so the config file holds
    /// no secret; exactly one of the three. Never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Read the password from this file when the config is loaded (without the trailing
    /// newline). Keep it `0600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Read the password from this environment variable when the config is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// Default of [`CameraPushConfig::name`].
pub const DEFAULT_CAMERA_PUSH_NAME: &str = "camera-push";

fn default_name() -> String {
    DEFAULT_CAMERA_PUSH_NAME.to_owned()
}

fn default_realm() -> String {
    "estate-gateway".to_owned()
}

fn default_clear_after() -> Duration {
    crate::sources::SourceConfig::DEFAULT_CLEAR_AFTER
}

fn default_max_body() -> ByteSize {
    ByteSize::mib(2)
}
