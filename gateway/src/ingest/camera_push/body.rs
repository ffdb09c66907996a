//! A pushed body: plain XML, or `multipart/form-data` / `multipart/mixed` with the XML
//! part and JPEG snapshots; and what of it an event keeps as its raw bytes. Pure.
//!
//! Hikvision names the XML part after the event (`name="linedetection"`,
//! `filename="MoveDetection.xml"`), with `Content-Type: application/xml` or none at all,
//! and each snapshot `image/jpeg` (`name="linedetectionImage"`); firmwares set to JSON
//! send the same alert as an `application/json` part. The alert's part is the first part
//! typed `application/xml`, `text/xml` or `application/json`, else the first named
//! `*.xml` or `*.json`, else the first with neither a type nor a file name.
//!
//! The raw bytes: a plain body is kept as it came (cut to `ingest.raw_limit` like an MQTT
//! payload). A multipart body is kept as a MIME `multipart/mixed` entity that any MIME
//! library reads: its own `Content-Type` line, the alert's part, then every snapshot that
//! still fits in `ingest.raw_limit` whole (never a cut JPEG); the snapshots that do not
//! fit are left out, and the event is marked `raw_truncated`. Raise `ingest.raw_limit` (and
//! `store.record_max_bytes`) to keep them: docs/formats.md, "Camera push".

use bytes::Bytes;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// Its headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Its content.
    pub body: &'a [u8],
}

impl Part<'_> {
    /// The header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(media_type)
    }

    /// A parameter (`name`, `filename`) of `Content-Disposition`.
    pub fn disposition(&self, param: &str) -> Option<String> {
        self.header("content-disposition")
            .and_then(|d| parameter(d, param))
    }

    fn is_image(&self) -> bool {
        self.media_type().is_some_and(|t| t.starts_with("image/"))
    }
}

/// `type/subtype` of a `Content-Type` value, lower-cased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parameter `name` of a header value (`…; boundary="x"; name=y`), unquoted.
pub fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The first index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The parts of a multipart body with `boundary`, or what is wrong with it.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    if boundary.is_empty() {
        return Err("the Content-Type has no boundary".into());
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0)
        .ok_or_else(|| format!("the boundary {boundary:?} does not occur in the body"))?;
    let mut out = Vec::new();
    loop {
        let mut pos = at + delimiter.len();
        if body[pos..].starts_with(b"--") {
            return Ok(out);
        }
        while body.get(pos).is_some_and(|b| *b == b' ' || *b == b'\t') {
            pos += 1;
        }
        pos += if body[pos..].starts_with(b"\r\n") {
            2
        } else if body[pos..].starts_with(b"\n") {
            1
        } else {
            return Err(format!(
                "part {} does not start on a new line",
                out.len() + 1
            ));
        };
        // Headers up to the empty line.
        let mut headers = Vec::new();
        loop {
            let end = find(body, b"\n", pos)
                .ok_or_else(|| format!("part {} ends inside its headers", out.len() + 1))?;
            let line = &body[pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos = end + 1;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(line);
            let (name, value) = line.split_once(':').ok_or_else(|| {
                format!("part {}: header line {line:?} has no ':'", out.len() + 1)
            })?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        // The content runs up to the line break before the next delimiter.
        let next = find(body, delimiter, pos).ok_or_else(|| {
            format!(
                "part {} has no closing boundary (cut short?)",
                out.len() + 1
            )
        })?;
        let mut end = next;
        if end > pos && body[end - 1] == b'\n' {
            end -= 1;
            if end > pos && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        out.push(Part {
            headers,
            body: &body[pos..end],
        });
        at = next;
        if out.len() > 64 {
            return Err("more than 64 parts".into());
        }
    }
}

/// The alert's part (module doc) and the snapshots.
pub fn split<'p, 'a>(parts: &'p [Part<'a>]) -> (Option<&'p Part<'a>>, Vec<&'p Part<'a>>) {
    let typed = parts.iter().find(|p| {
        matches!(
            p.media_type().as_deref(),
            Some("application/xml" | "text/xml" | "application/json")
        )
    });
    let named = || {
        parts.iter().find(|p| {
            !p.is_image()
                && ["filename", "name"].iter().any(|k| {
                    p.disposition(k).is_some_and(|n| {
                        let n = n.to_ascii_lowercase();
                        n.ends_with(".xml") || n.ends_with(".json")
                    })
                })
        })
    };
    let bare = || {
        parts
            .iter()
            .find(|p| p.header("content-type").is_none() && p.disposition("filename").is_none())
    };
    let xml = typed.or_else(named).or_else(bare);
    let images = parts.iter().filter(|p| p.is_image()).collect();
    (xml, images)
}

/// What an event keeps of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The raw bytes (module doc).
    pub raw: Bytes,
    /// Something was left out or cut.
    pub truncated: bool,
    /// Snapshots kept whole.
    pub images_kept: usize,
    /// Snapshots left out for `raw_limit`.
    pub images_dropped: usize,
}

/// The raw bytes of a multipart alarm within `raw_limit` (module doc): the alert's part
/// `xml` (of media type `alert_type`) and what fits of `images`.
pub fn keep(alert_type: &str, xml: &[u8], images: &[&Part<'_>], raw_limit: usize) -> Kept {
    // A boundary that occurs in none of the contents.
    let mut seed = crate::hash::fnv1a(xml);
    let boundary = loop {
        let b = format!("estate-raw-{seed:016x}");
        let clash = find(xml, b.as_bytes(), 0).is_some()
            || images
                .iter()
                .any(|p| find(p.body, b.as_bytes(), 0).is_some());
        if !clash {
            break b;
        }
        seed = seed.wrapping_add(1);
    };
    let mut raw = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: {alert_type}\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(xml);
    let close = format!("\r\n--{boundary}--\r\n");
    if raw.len() + close.len() > raw_limit {
        // Not even the XML fits: keep the XML alone, cut, as a plain payload would be.
        let (raw, _) = crate::ingest::formats::bounded_raw(xml, raw_limit);
        return Kept {
            raw,
            truncated: true,
            images_kept: 0,
            images_dropped: images.len(),
        };
    }
    let (mut kept, mut dropped) = (0, 0);
    for (i, image) in images.iter().enumerate() {
        let media = image.media_type().unwrap_or_else(|| "image/jpeg".into());
        let name = image
            .disposition("filename")
            .filter(|n| n.chars().all(|c| c.is_ascii_graphic() && c != '"'))
            .unwrap_or_else(|| format!("image-{}.jpg", i + 1));
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {media}\r\nContent-Disposition: inline; filename=\"{name}\"\r\n\r\n"
        );
        if raw.len() + head.len() + image.body.len() + close.len() <= raw_limit {
            raw.extend_from_slice(head.as_bytes());
            raw.extend_from_slice(image.body);
            kept += 1;
        } else {
            dropped += 1;
        }
    }
    raw.extend_from_slice(close.as_bytes());
    Kept {
        raw: Bytes::from(raw),
        truncated: dropped > 0,
        images_kept: kept,
        images_dropped: dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"--MIME_boundary\r\n\
Content-Disposition: form-data; name=\"linedetection\"\r\n\
Content-Type: application/xml; charset=\"UTF-8\"\r\n\
Content-Length: 20\r\n\
\r\n\
<EventNotificationAlert/>\r\n\
--MIME_boundary\r\n\
Content-Disposition: form-data; name=\"linedetectionImage\"; filename=\"linedetection.jpg\"\r\n\
Content-Type: image/jpeg\r\n\
\r\n\
\xff\xd8\xff\xe0JFIF\r\n--not-it\xff\xd9\r\n\
--MIME_boundary--\r\n";

    #[test]
    fn parts_are_split_at_the_boundary_only() {
        let p = parts(BODY, "MIME_boundary").expect("parts");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].body, b"<EventNotificationAlert/>");
        assert_eq!(p[0].disposition("name").as_deref(), Some("linedetection"));
        assert_eq!(p[1].body, b"\xff\xd8\xff\xe0JFIF\r\n--not-it\xff\xd9");
        let (xml, images) = split(&p);
        assert_eq!(xml.map(|x| x.body), Some(&b"<EventNotificationAlert/>"[..]));
        assert_eq!(images.len(), 1);
        assert!(parts(BODY, "other").is_err());
        assert!(
            parts(&BODY[..BODY.len() - 30], "MIME_boundary").is_err(),
            "cut short"
        );
    }

    proptest::proptest! {
        /// A hostile multipart body never panics the splitter, whole or cut anywhere.
        #[test]
        fn parts_never_panic(cut in 0usize..400, bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parts(&BODY[..cut.min(BODY.len())], "MIME_boundary");
            let mut mixed = b"--MIME_boundary\r\n".to_vec();
            mixed.extend_from_slice(&bytes);
            if let Ok(p) = parts(&mixed, "MIME_boundary") {
                let (xml, images) = split(&p);
                let _ = keep("application/xml", xml.map_or(&b""[..], |x| x.body), &images, 300);
            }
        }
    }

    #[test]
    fn an_untyped_part_is_the_xml_when_nothing_is_typed() {
        let body =
            b"--b\nContent-Disposition: form-data; name=\"MoveDetection.xml\"\n\n<x/>\n--b--\n";
        let p = parts(body, "b").expect("bare LF line ends");
        assert_eq!(split(&p).0.map(|x| x.body), Some(&b"<x/>"[..]));
    }

    #[test]
    fn the_raw_keeps_whole_images_that_fit_and_is_a_mime_entity() {
        let p = parts(BODY, "MIME_boundary").expect("parts");
        let (xml, images) = split(&p);
        let xml = xml.expect("xml").body;
        let all = keep("application/xml", xml, &images, 4096);
        assert_eq!(
            (all.images_kept, all.images_dropped, all.truncated),
            (1, 0, false)
        );
        let text = String::from_utf8_lossy(&all.raw).into_owned();
        let boundary = parameter(text.lines().next().expect("line"), "boundary").expect("boundary");
        let again = parts(&all.raw, &boundary).expect("the raw parses as multipart");
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].body, xml);
        assert_eq!(again[1].body, images[0].body, "the JPEG bytes unchanged");
        assert_eq!(
            again[1].disposition("filename").as_deref(),
            Some("linedetection.jpg")
        );
        // Too small for the image: the XML alone, flagged.
        let small = keep("application/xml", xml, &images, 200);
        assert_eq!(
            (small.images_kept, small.images_dropped, small.truncated),
            (0, 1, true)
        );
        assert!(small.raw.len() <= 200);
        assert_eq!(parts(&small.raw, &boundary).map(|p| p.len()).ok(), Some(1));
    }
}
