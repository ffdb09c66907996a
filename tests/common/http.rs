//! HTTP to the gateway's API through hyper's HTTP/1.1 client.

#[allow(unused_imports)]
use super::*;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// `GET path`: status and body. 10 s at most.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let (status, _headers, body) = http_get_full(addr, path).await?;
    Ok((status, body))
}

/// `GET path`: status, headers (lower-cased names) and body.
pub async fn http_get_full(
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    http_request_full(addr, "GET", path, &[], "").await
}

/// `METHOD path` with extra headers and a body (JSON when not empty): status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let (status, _headers, body) = http_request_full(addr, method, path, headers, body).await?;
    Ok((status, body))
}

/// `METHOD path` over HTTP/1.1 with hyper's client: status, headers (lower-cased names),
/// body. 10 s at most.
pub async fn http_request_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    let mut all = headers.to_vec();
    if !body.is_empty() || method != "GET" {
        all.push(("content-type", "application/json"));
    }
    let (status, headers, body) =
        http_request_bytes(addr, method, path, &all, body.as_bytes().to_vec()).await?;
    let body = String::from_utf8(body).context("body is not UTF-8")?;
    Ok((status, headers, body))
}

/// `METHOD path` with exactly these headers (give the content type) and a body of any
/// bytes: status, headers (lower-cased names), body bytes. 10 s at most.
pub async fn http_request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, headers, body))
    };
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no response within 10 s"))??;
    Ok((status, headers, body.to_vec()))
}

/// `GET path` that must answer 200 with JSON: the JSON (panics naming the path otherwise).
pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `POST path` with a JSON `body` and, when given, `Authorization: Bearer token`: the
/// status and the answer as JSON (a body that is not JSON as a JSON string).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, body) = http_request(addr, "POST", path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, v)
}
