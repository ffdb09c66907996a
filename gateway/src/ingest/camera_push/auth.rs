//! HTTP authentication of pushing cameras: basic (RFC 7617) and digest (RFC 7616 with
//! MD5, the algorithm cameras implement). Pure: headers, the clock and the secret in;
//! the user or a refusal and the challenge out.
//!
//! Nonces are stateless: `{issued_ms:x}.{MD5(secret:issued_ms) hex}`, valid for
//! [`NONCE_LIFETIME_MS`]; an older one is answered with a fresh challenge marked
//! `stale=true`, on which clients retry without asking for the password again. A nonce
//! count is not tracked, so a captured request could be replayed within the nonce's
//! lifetime; its effect would be one repeated alarm, which folds into the open one.

use md5::{Digest as _, Md5};

use crate::auth::constant_time_eq;
use estate_config::{PushAuth, PushUser};

/// How long a nonce is accepted after it was issued.
pub const NONCE_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// Why a request was refused: the label of `estate_camera_push_requests_total` is
/// `unauthorized` for all of them; this goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A scheme the listener does not accept here (`Basic` while only digest is on…).
    Scheme(String),
    /// The header does not parse.
    Malformed(&'static str),
    /// No such user, or the password or digest does not match.
    Wrong(String),
    /// A nonce this gateway did not issue (or issued before a restart).
    BadNonce,
    /// A nonce older than [`NONCE_LIFETIME_MS`]: the challenge says `stale=true`.
    Stale,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing => f.write_str("no Authorization header"),
            Refusal::Scheme(s) => write!(f, "scheme {s:?} is not accepted here"),
            Refusal::Malformed(why) => write!(f, "malformed Authorization header: {why}"),
            Refusal::Wrong(user) => write!(f, "wrong credentials for user {user:?}"),
            Refusal::BadNonce => f.write_str("a nonce this gateway did not issue"),
            Refusal::Stale => f.write_str("an expired nonce"),
        }
    }
}

/// The accounts and mode of `[ingest.camera_push]`, and the nonce secret.
#[derive(Debug)]
pub struct Authenticator {
    mode: PushAuth,
    realm: String,
    /// (name, password); the password is never logged.
    users: Vec<(String, estate_config::Secret)>,
    /// Random per process: nonces of an earlier process are refused (a fresh challenge).
    secret: [u8; 16],
}

impl Authenticator {
    /// From the config's mode, realm and users (passwords already resolved) and a
    /// random `secret`.
    pub fn new(mode: PushAuth, realm: &str, users: &[PushUser], secret: [u8; 16]) -> Self {
        Authenticator {
            mode,
            realm: realm.to_owned(),
            users: users
                .iter()
                .filter_map(|u| Some((u.name.clone(), u.password.clone()?)))
                .collect(),
            secret,
        }
    }

    /// The user a request authenticates as (`Some("")` when `auth = "none"`), or why not.
    pub fn check(
        &self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        now_ms: i64,
    ) -> Result<String, Refusal> {
        if self.mode == PushAuth::None {
            return Ok(String::new());
        }
        let header = authorization.ok_or(Refusal::Missing)?.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") && self.mode.basic() {
            return self.basic(rest.trim());
        }
        if scheme.eq_ignore_ascii_case("digest") && self.mode.digest() {
            return self.digest(method, uri, rest, now_ms);
        }
        Err(Refusal::Scheme(scheme.to_owned()))
    }

    /// The `WWW-Authenticate` values of a 401 (one per accepted scheme, digest first).
    pub fn challenges(&self, stale: bool, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        if self.mode.digest() {
            out.push(format!(
                "Digest realm=\"{}\", qop=\"auth\", algorithm=MD5, nonce=\"{}\"{}",
                self.realm,
                self.nonce(now_ms),
                if stale { ", stale=true" } else { "" }
            ));
        }
        if self.mode.basic() {
            out.push(format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm));
        }
        out
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(n, _)| n == user)
            .map(|(_, p)| p.expose())
    }

    fn basic(&self, token: &str) -> Result<String, Refusal> {
        let decoded = base64_decode(token).ok_or(Refusal::Malformed("basic: not base64"))?;
        let text =
            String::from_utf8(decoded).map_err(|_| Refusal::Malformed("basic: not UTF-8"))?;
        let (user, password) = text.split_once(':').ok_or(Refusal::Malformed(
            "basic: no ':' between user and password",
        ))?;
        match self.password(user) {
            Some(p) if constant_time_eq(p.as_bytes(), password.as_bytes()) => Ok(user.to_owned()),
            _ => Err(Refusal::Wrong(user.to_owned())),
        }
    }

    fn nonce(&self, issued_ms: i64) -> String {
        format!("{issued_ms:x}.{}", self.nonce_mac(issued_ms))
    }

    fn nonce_mac(&self, issued_ms: i64) -> String {
        let mut h = Md5::new();
        h.update(self.secret);
        h.update(b":");
        h.update(issued_ms.to_string());
        hex(&h.finalize())
    }

    fn digest(
        &self,
        method: &str,
        uri: &str,
        params: &str,
        now_ms: i64,
    ) -> Result<String, Refusal> {
        let p =
            parse_params(params).ok_or(Refusal::Malformed("digest: parameters do not parse"))?;
        let get = |k: &str| {
            p.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let user = get("username").ok_or(Refusal::Malformed("digest: no username"))?;
        let nonce = get("nonce").ok_or(Refusal::Malformed("digest: no nonce"))?;
        let response = get("response").ok_or(Refusal::Malformed("digest: no response"))?;
        let digest_uri = get("uri").ok_or(Refusal::Malformed("digest: no uri"))?;
        if get("realm") != Some(self.realm.as_str()) {
            return Err(Refusal::Wrong(user.to_owned()));
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Err(Refusal::Malformed("digest: only algorithm=MD5 is offered"));
        }
        if digest_uri != uri {
            return Err(Refusal::Malformed("digest: uri is not the request's"));
        }
        let (issued, mac) = nonce.split_once('.').ok_or(Refusal::BadNonce)?;
        let issued = i64::from_str_radix(issued, 16).map_err(|_| Refusal::BadNonce)?;
        if !constant_time_eq(mac.as_bytes(), self.nonce_mac(issued).as_bytes()) {
            return Err(Refusal::BadNonce);
        }
        let password = self
            .password(user)
            .ok_or_else(|| Refusal::Wrong(user.to_owned()))?;
        let ha1 = md5_hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{digest_uri}"));
        let expected = match get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = get("nc").ok_or(Refusal::Malformed("digest: qop=auth without nc"))?;
                let cnonce =
                    get("cnonce").ok_or(Refusal::Malformed("digest: qop=auth without cnonce"))?;
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            Some(_) => return Err(Refusal::Malformed("digest: only qop=auth is offered")),
            // RFC 2069 clients answer without qop.
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(Refusal::Wrong(user.to_owned()));
        }
        // Checked last: a stale nonce with the right password is answered with a
        // `stale=true` challenge, on which the camera retries without a new password.
        if now_ms - issued > NONCE_LIFETIME_MS || issued > now_ms + 60_000 {
            return Err(Refusal::Stale);
        }
        Ok(user.to_owned())
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of `s` in lower-case hex.
pub fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

/// `name=value, name="quoted \" value", …` (RFC 7235 auth-params); `None` when it does
/// not parse.
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || name.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name, value));
    }
}

/// Standard base64 (with or without padding); `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64ct::{Base64, Base64Unpadded, Encoding};
    // RFC 7617 pads; a camera that leaves the padding off is taken as well.
    Base64::decode_vec(s)
        .or_else(|_| Base64Unpadded::decode_vec(s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_config::Secret;

    fn auth(mode: PushAuth) -> Authenticator {
        let users = [PushUser {
            name: "Mufasa".into(),
            password: Some(Secret::new("Circle of Life")),
            password_file: None,
            password_env: None,
        }];
        Authenticator::new(mode, "http-auth@example.org", &users, [7; 16])
    }

    /// What a client computes from a challenge (RFC 7616 section 3.4.1, MD5).
    fn answer(
        user: &str,
        password: &str,
        realm: &str,
        nonce: &str,
        uri: &str,
        nc: &str,
        cnonce: &str,
    ) -> String {
        let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
        let ha2 = md5_hex(&format!("POST:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", uri=\"{uri}\", algorithm=MD5, \
             nonce=\"{nonce}\", nc={nc}, cnonce=\"{cnonce}\", qop=auth, response=\"{response}\""
        )
    }

    fn nonce_of(challenge: &str) -> String {
        let p = parse_params(challenge.strip_prefix("Digest ").expect("digest")).expect("params");
        p.into_iter().find(|(k, _)| k == "nonce").expect("nonce").1
    }

    /// RFC 7616's own MD5 example (section 3.9.1): the same inputs give its response.
    #[test]
    fn the_md5_response_is_rfc_7616s_example() {
        let ha1 = md5_hex("Mufasa:http-auth@example.org:Circle of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        assert_eq!(
            md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn a_digest_answer_to_our_challenge_is_accepted_and_a_wrong_one_refused() {
        let a = auth(PushAuth::Digest);
        let now = 1_000_000;
        let challenges = a.challenges(false, now);
        assert_eq!(challenges.len(), 1, "digest only: {challenges:?}");
        assert!(challenges[0].starts_with(
            "Digest realm=\"http-auth@example.org\", qop=\"auth\", algorithm=MD5, nonce=\""
        ));
        let nonce = nonce_of(&challenges[0]);
        let realm = "http-auth@example.org";
        let ok = answer(
            "Mufasa",
            "Circle of Life",
            realm,
            &nonce,
            "/ISAPI/alarm",
            "00000001",
            "abc",
        );
        assert_eq!(
            a.check("POST", "/ISAPI/alarm", Some(&ok), now + 10),
            Ok("Mufasa".into())
        );
        let wrong = answer(
            "Mufasa",
            "circle of life",
            realm,
            &nonce,
            "/ISAPI/alarm",
            "00000001",
            "abc",
        );
        assert_eq!(
            a.check("POST", "/ISAPI/alarm", Some(&wrong), now),
            Err(Refusal::Wrong("Mufasa".into()))
        );
        let other_uri = answer(
            "Mufasa",
            "Circle of Life",
            realm,
            &nonce,
            "/other",
            "00000001",
            "abc",
        );
        assert!(matches!(
            a.check("POST", "/ISAPI/alarm", Some(&other_uri), now),
            Err(Refusal::Malformed(_))
        ));
        // A nonce this process did not issue, and one too old.
        let forged = answer(
            "Mufasa",
            "Circle of Life",
            realm,
            "f4240.0000",
            "/ISAPI/alarm",
            "00000001",
            "abc",
        );
        assert_eq!(
            a.check("POST", "/ISAPI/alarm", Some(&forged), now),
            Err(Refusal::BadNonce)
        );
        let later = now + NONCE_LIFETIME_MS + 1;
        assert_eq!(
            a.check("POST", "/ISAPI/alarm", Some(&ok), later),
            Err(Refusal::Stale)
        );
        assert!(a.challenges(true, later)[0].ends_with(", stale=true"));
        // Basic is not accepted in digest mode.
        let basic = "Basic TXVmYXNhOkNpcmNsZSBvZiBMaWZl";
        assert_eq!(
            a.check("POST", "/", Some(basic), now),
            Err(Refusal::Scheme("Basic".into()))
        );
        assert_eq!(a.check("POST", "/", None, now), Err(Refusal::Missing));
    }

    #[test]
    fn basic_checks_user_and_password_and_both_schemes_can_be_offered() {
        let a = auth(PushAuth::BasicOrDigest);
        // "Mufasa:Circle of Life"
        assert_eq!(
            a.check("POST", "/", Some("Basic TXVmYXNhOkNpcmNsZSBvZiBMaWZl"), 0),
            Ok("Mufasa".into())
        );
        // "Mufasa:circle"
        assert_eq!(
            a.check("POST", "/", Some("basic TXVmYXNhOmNpcmNsZQ=="), 0),
            Err(Refusal::Wrong("Mufasa".into()))
        );
        assert!(matches!(
            a.check("POST", "/", Some("Basic !!!"), 0),
            Err(Refusal::Malformed(_))
        ));
        let c = a.challenges(false, 0);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[1],
            "Basic realm=\"http-auth@example.org\", charset=\"UTF-8\""
        );
        assert_eq!(
            auth(PushAuth::None).check("POST", "/", None, 0),
            Ok(String::new())
        );
    }

    #[test]
    fn base64_and_params_decode_what_clients_send() {
        assert_eq!(
            base64_decode("YWRtaW46MTIzNDU=").as_deref(),
            Some(&b"admin:12345"[..])
        );
        assert_eq!(base64_decode("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(
            parse_params(r#"username="a\"b", nc=00000001 ,qop=auth"#),
            Some(vec![
                ("username".into(), "a\"b".into()),
                ("nc".into(), "00000001".into()),
                ("qop".into(), "auth".into())
            ])
        );
        assert_eq!(parse_params(r#"username="open"#), None);
    }
}
