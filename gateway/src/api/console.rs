//! The property-management web console (物业值班台): static assets embedded in the
//! binary, so no build toolchain or files are needed at run time.
//!
//! Layout: `console/index.html` (the page and its row templates), `console/console.js`
//! (a plain ES module: initial load through the `/api/*` GET endpoints, then live updates
//! from the `/api/stream` server-sent events), `console/console.css`. The page makes no
//! request beyond this gateway (it runs on an estate LAN without internet), which the
//! `Content-Security-Policy` below enforces.
//!
//! Caching: every asset is served with `Cache-Control: no-cache` and a strong `ETag` (a
//! hash of its bytes), so a browser revalidates with a cheap `304` and never shows a
//! stale console after an upgrade; the page also names its script and stylesheet with a
//! `?v=` query of the assets' combined hash. `GET /api/codes` (the taxonomy's code list
//! with the Chinese labels the console shows) is built and served the same way.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::hash::fnv1a;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Only this gateway: scripts, styles, API calls and the event stream.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded asset, ready to serve.
#[derive(Debug)]
struct Asset {
    body: String,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: String, content_type: &'static str) -> Asset {
        let etag = format!("\"{:016x}\"", fnv1a(body.as_bytes()));
        Asset {
            body,
            content_type,
            etag,
        }
    }
}

#[derive(Debug)]
struct Assets {
    index: Asset,
    js: Asset,
    css: Asset,
    codes: Asset,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let version = format!(
            "{:08x}",
            fnv1a(format!("{CONSOLE_JS}\u{0}{CONSOLE_CSS}").as_bytes()) as u32
        );
        Assets {
            index: Asset::new(
                INDEX_HTML.replace("__VERSION__", &version),
                "text/html; charset=utf-8",
            ),
            js: Asset::new(CONSOLE_JS.to_owned(), "text/javascript; charset=utf-8"),
            css: Asset::new(CONSOLE_CSS.to_owned(), "text/css; charset=utf-8"),
            codes: Asset::new(codes_json(), "application/json"),
        }
    })
}

/// Routes serving the console's assets; merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve(&assets().index, &h) }),
        )
        .route(
            "/console.js",
            get(|h: HeaderMap| async move { serve(&assets().js, &h) }),
        )
        .route(
            "/console.css",
            get(|h: HeaderMap| async move { serve(&assets().css, &h) }),
        )
}

/// `GET /api/codes`: every event code of the taxonomy
/// (`estate_protocols::taxonomy::CODES`) in its order, as
/// `{code, severity, stateful, kind, title, title_zh}` (severity 1 critical … 4 info;
/// kind `null` when the code has no usual device kind). The console labels alerts with
/// it. Fixed for one build, so it is served like the console's assets: built once, with
/// an `ETag` (a hash of the body) and `304 Not Modified` on a matching `If-None-Match`.
pub(super) async fn codes(h: HeaderMap) -> Response {
    serve(&assets().codes, &h)
}

fn codes_json() -> String {
    let list: Vec<serde_json::Value> = estate_protocols::taxonomy::CODES
        .iter()
        .map(|c| {
            serde_json::json!({
                "code": c.code,
                "severity": c.severity.level(),
                "stateful": c.stateful,
                "kind": c.kind.map(|k| k.as_str()),
                "title": c.title,
                "title_zh": c.title_zh,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &asset.etag));
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    (StatusCode::OK, headers, asset.body.as_str()).into_response()
}

/// Whether an `If-None-Match` value (`*`, or a list of possibly weak tags) names `etag`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_versioned_assets_that_exist() {
        let a = assets();
        assert!(!a.index.body.contains("__VERSION__"));
        assert!(a.index.body.contains("console.js?v="), "script tag");
        assert!(a.index.body.contains("console.css?v="), "stylesheet link");
        assert_ne!(a.js.etag, a.css.etag);
    }

    #[test]
    fn if_none_match_forms() {
        let tag = "\"00ff\"";
        assert!(etag_matches("\"00ff\"", tag));
        assert!(etag_matches("W/\"00ff\"", tag));
        assert!(etag_matches("\"abcd\", \"00ff\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abcd\"", tag));
        assert!(!etag_matches("", tag));
    }

    #[test]
    fn page_fetches_nothing_from_outside() {
        for (name, body) in [
            ("index.html", INDEX_HTML),
            ("console.js", CONSOLE_JS),
            ("console.css", CONSOLE_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!body.contains(needle), "{name} contains {needle:?}");
            }
        }
    }
}
