//! Server-sent events from a stream's bytes, as they arrive.

/// One server-sent event: its type (`message` when the event names none) and its
/// `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SseEvent {
    pub(super) event: String,
    pub(super) data: String,
}

/// The longest line kept: a longer one (no gateway sends it) is dropped, not buffered.
pub(super) const SSE_MAX_LINE: usize = 1 << 20;

/// Server-sent events from bytes as they arrive (the WHATWG `text/event-stream` rules
/// the gateway uses): `event:` names the type, `data:` lines add to the data, a blank
/// line ends the event (one without data is dropped), a line starting with `:` is a
/// comment (the keep-alive), other fields (`id:`, `retry:`) are ignored. Lines end with
/// `\n` or `\r\n`; a chunk may end anywhere, even inside a character.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    line: Vec<u8>,
    /// The current line went past [`SSE_MAX_LINE`]: drop it up to its end.
    overlong: bool,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes of the stream: the events they complete.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !std::mem::take(&mut self.overlong) {
                    self.line_done(&String::from_utf8_lossy(&line), &mut out);
                }
            } else if self.line.len() < SSE_MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
                self.line.clear();
            }
        }
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}
