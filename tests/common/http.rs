//! HTTP to the gateway's API: a tiny HTTP/1.1 client.

#[allow(unused_imports)]
use super::*;

/// `GET path` over HTTP/1.1 (`Connection: close`): status and body. 10 s at most.
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

/// `METHOD path` over HTTP/1.1 (`Connection: close`): status, headers, body. 10 s at most.
pub async fn http_request_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no response within 10 s"))??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no end of headers"))?;
    let head = std::str::from_utf8(&buf[..split]).context("response head")?;
    let raw_body = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Ok((
        status,
        headers,
        String::from_utf8(body).context("body is not UTF-8")?,
    ))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        b = b
            .get(size + 2..)
            .ok_or_else(|| anyhow!("short chunk trailer"))?;
    }
}
