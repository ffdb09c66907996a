//! Loading: TOML text → [`Config`], collecting every problem with its location.
//!
//! Plain serde stops at the first error, so loading runs in three phases:
//!
//! 1. Parse the text into a span-keeping `toml_edit` document. A syntax error is the one
//!    problem that stops everything (nothing after it can be trusted).
//! 2. Deserialize each section, and each `[[devices]]` entry, on its own. When one fails,
//!    the key the error points at is reported, removed, and the section deserialized
//!    again, so one section yields all of its type errors and unknown keys; the removed
//!    key takes its default for phase 3.
//! 3. Run the semantic rules (`validate.rs`) on what deserialized, and locate each
//!    finding by looking its key path up in the document.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{DocumentMut, ImDocument, Item, Table, TableLike, Value};

use crate::error::{ConfigErrors, ConfigProblem};
use crate::schema::{Config, DeviceConfig};
use crate::validate::{validate, Parts};

mod modbus;

/// The top-level sections, in the order they are documented.
pub const SECTIONS: &[&str] = &[
    "gateway", "ingest", "store", "uplink", "api", "devices", "modbus", "alerts", "commands",
];

/// Guards the retry loop of [`Loader::section`]; each round removes one key, so a real
/// file never comes near it.
const MAX_ROUNDS: usize = 10_000;

pub(crate) fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let src = Source::new(file, text);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim_end().replace('\n', "; ");
            return Err(ConfigErrors(vec![src.problem(e.span(), "", message)]));
        }
    };
    let mut loader = Loader {
        src,
        root: doc.as_table(),
        problems: Vec::new(),
        broken: BTreeSet::new(),
    };
    loader.run()
}

/// The text being loaded, for turning byte offsets into lines and columns.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> Source<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Source { file, text }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn problem(
        &self,
        span: Option<Range<usize>>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigProblem {
        let (line, column) = match span.map(|s| self.line_col(s.start)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ConfigProblem {
            file: self.file.to_owned(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        }
    }
}

struct Loader<'a> {
    src: Source<'a>,
    root: &'a Table,
    problems: Vec<ConfigProblem>,
    /// Key paths already reported as unusable (replaced by a default or dropped); rules
    /// that read them are skipped so one mistake is reported once.
    broken: BTreeSet<String>,
}

/// What the file holds under one top-level key.
enum Section {
    Absent,
    /// A table, and where to point when a problem concerns the table as a whole.
    Table(Table, Option<Range<usize>>),
    /// Present but not a table; already reported.
    Broken,
}

impl<'a> Loader<'a> {
    fn run(&mut self) -> Result<Config, ConfigErrors> {
        for (key, item) in self.root.iter() {
            if !SECTIONS.contains(&key) {
                let span = self
                    .root
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| item.span());
                let message = format!(
                    "unknown section `{key}`; expected one of: {}",
                    SECTIONS.join(", ")
                );
                self.problems.push(self.src.problem(span, key, message));
            }
        }

        let gateway = match self.table("gateway") {
            Section::Absent => {
                self.problems.push(self.src.problem(
                    None,
                    "gateway",
                    "missing required section [gateway] with `id` and `estate_id`",
                ));
                None
            }
            Section::Table(t, span) => self.section(t, "gateway", span),
            Section::Broken => None,
        };
        let mut parts = Parts {
            gateway,
            ingest: None,
            store: self.optional_section("store"),
            uplink: self.optional_section("uplink"),
            api: self.optional_section("api"),
            alerts: self.optional_section("alerts"),
            commands: self.optional_section("commands"),
            ..Parts::default()
        };
        self.ingest(&mut parts);
        self.devices(&mut parts);
        parts.given = self.given_broker_keys();
        parts.modbus = self.modbus();

        let mut findings = validate(&parts);
        // Secrets from files and environment variables (never part of any message).
        findings.extend(crate::secrets::resolve(&mut parts));
        self.report(findings);

        if self.problems.is_empty() && parts.modbus.profile_problems.is_empty() {
            if let (
                Some(gateway),
                Some(ingest),
                Some(store),
                Some(uplink),
                Some(api),
                Some(modbus),
                Some(alerts),
                Some(commands),
            ) = (
                parts.gateway,
                parts.ingest,
                parts.store,
                parts.uplink,
                parts.api,
                parts.modbus.config,
                parts.alerts,
                parts.commands,
            ) {
                return Ok(Config {
                    gateway,
                    ingest,
                    store,
                    uplink,
                    api,
                    devices: parts.devices.into_iter().map(|(_, d)| d).collect(),
                    modbus,
                    alerts,
                    commands,
                });
            }
            // Unreachable in practice: a section is only `None` after a reported problem.
            self.problems
                .push(self.src.problem(None, "", "config is incomplete"));
        }
        let mut problems = std::mem::take(&mut self.problems);
        // File order; problems without a line (missing section) first. Stable, so
        // problems at one spot keep the order they were found in.
        problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column.unwrap_or(0)));
        // Then the problems found in profile files, file by file.
        problems.extend(parts.modbus.profile_problems);
        Err(ConfigErrors(problems))
    }

    /// `{ingest,uplink}.mqtt.{host,port}` where the file sets them: their defaults look
    /// like a value given, so the rule that forbids them beside `hosts` asks here.
    fn given_broker_keys(&self) -> Vec<String> {
        let mut given = Vec::new();
        for section in ["ingest", "uplink"] {
            let mqtt = self
                .root
                .get(section)
                .and_then(Item::as_table_like)
                .and_then(|t| t.get("mqtt"))
                .and_then(Item::as_table_like);
            for key in ["host", "port"] {
                if mqtt.is_some_and(|t| t.contains_key(key)) {
                    given.push(format!("{section}.mqtt.{key}"));
                }
            }
        }
        given
    }

    /// `path` or one of its parents or children was reported as broken.
    fn is_broken(&self, path: &str) -> bool {
        self.broken.iter().any(|b| {
            path == b
                || path
                    .strip_prefix(b.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
                || b.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    fn mark_broken(&mut self, path: String, span: Option<Range<usize>>, message: String) {
        self.problems
            .push(self.src.problem(span, path.clone(), message));
        self.broken.insert(path);
    }

    fn table(&mut self, name: &str) -> Section {
        let Some((key, item)) = self.root.get_key_value(name) else {
            return Section::Absent;
        };
        match item {
            Item::Table(t) => Section::Table(t.clone(), t.span().or_else(|| key.span())),
            Item::Value(Value::InlineTable(t)) => {
                Section::Table(t.clone().into_table(), t.span().or_else(|| key.span()))
            }
            other => {
                let message = format!("must be a table ([{name}]), found {}", describe(other));
                self.mark_broken(
                    name.to_owned(),
                    other.span().or_else(|| key.span()),
                    message,
                );
                Section::Broken
            }
        }
    }

    fn optional_section<T: DeserializeOwned + Default>(&mut self, name: &str) -> Option<T> {
        match self.table(name) {
            Section::Absent => Some(T::default()),
            Section::Table(t, span) => self.section(t, name, span),
            Section::Broken => None,
        }
    }

    /// Deserializes `table` as a `T`, reporting every bad key in it (see the module doc).
    /// `None` when the table cannot become a `T` even without its bad keys (a required
    /// key is missing or was bad).
    fn section<T: DeserializeOwned>(
        &mut self,
        mut table: Table,
        base: &str,
        table_span: Option<Range<usize>>,
    ) -> Option<T> {
        let mut removed: Vec<Vec<String>> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let err = match toml_edit::de::from_document::<T>(DocumentMut::from(table.clone())) {
                Ok(value) => return Some(value),
                Err(err) => err,
            };
            let message = err.message().trim_end().to_owned();
            let span = err.span();
            if let Some(rel) = span.as_ref().and_then(|s| find_key(&table, s)) {
                if let Some(field) = missing_field(&message) {
                    // A nested table lacks a required key: report it at the table.
                    let path = join(base, &rel);
                    let message = format!("missing required key `{field}`");
                    self.mark_broken(path, span, message);
                } else {
                    self.mark_broken(join(base, &rel), span, message);
                }
                remove(&mut table, &rel);
                removed.push(rel);
                continue;
            }
            // The error concerns the table itself.
            match missing_field(&message) {
                Some(field) if removed.iter().any(|r| r.len() == 1 && r[0] == field) => {
                    // The key was there but bad, and that is already reported.
                }
                Some(field) => {
                    let message = format!("missing required key `{field}`");
                    self.mark_broken(format!("{base}.{field}"), span.or(table_span), message);
                }
                None => self.mark_broken(base.to_owned(), span.or(table_span), message),
            }
            // Keys of a section that did not deserialize are not checked further, except
            // a device's id, which is still compared with the other devices' ids.
            return None;
        }
        None
    }

    /// `[ingest]`, with each `[[ingest.sources]]` entry deserialized on its own so one bad
    /// source does not hide the others (like `[[devices]]`).
    fn ingest(&mut self, parts: &mut Parts) {
        let (mut table, span) = match self.table("ingest") {
            Section::Absent => {
                parts.ingest = Some(Default::default());
                return;
            }
            Section::Broken => return,
            Section::Table(t, span) => (t, span),
        };
        let sources_item = table.remove("sources");
        let Some(mut ingest) = self.section::<crate::schema::IngestConfig>(table, "ingest", span)
        else {
            return;
        };
        if let Some(item) = sources_item {
            let mut sources = Vec::new();
            for (i, t, span) in self.entries("ingest.sources", "source", &item) {
                let base = format!("ingest.sources[{i}]");
                if let Some(Item::Value(Value::String(name))) = t.get("name") {
                    parts.source_names.push((i, name.value().clone()));
                }
                match self.section::<crate::sources::SourceTable>(t, &base, span) {
                    Some(table) => {
                        if table.name.is_none() {
                            parts
                                .source_names
                                .push((i, table.effective_name().to_owned()));
                        }
                        // A table whose keys do not fit its format stays out; the rules
                        // report why (`validate/sources.rs`).
                        if let Ok(source) = crate::sources::SourceConfig::try_from(table.clone()) {
                            sources.push(source);
                        }
                        parts.sources.push((i, table));
                    }
                    None => parts.sources_complete = false,
                }
            }
            ingest.sources = Some(sources);
        }
        parts.ingest = Some(ingest);
    }

    fn devices(&mut self, parts: &mut Parts) {
        let Some((key, item)) = self.root.get_key_value("devices") else {
            return;
        };
        let mut entries: Vec<(Table, Option<Range<usize>>)> = Vec::new();
        match item {
            Item::ArrayOfTables(aot) => {
                entries.extend(aot.iter().map(|t| (t.clone(), t.span())));
            }
            Item::Value(Value::Array(array)) => {
                for (i, value) in array.iter().enumerate() {
                    match value {
                        Value::InlineTable(t) => {
                            entries.push((t.clone().into_table(), value.span()));
                        }
                        other => {
                            let message =
                                format!("each device must be a table, found {}", other.type_name());
                            self.mark_broken(format!("devices[{i}]"), other.span(), message);
                            // Keep the indices of the entries after it right.
                            entries.push((Table::new(), None));
                        }
                    }
                }
            }
            other => {
                let message = format!(
                    "must be a list of devices ([[devices]] tables), found {}",
                    describe(other)
                );
                self.mark_broken(
                    "devices".to_owned(),
                    other.span().or_else(|| key.span()),
                    message,
                );
                return;
            }
        }

        for (i, (table, span)) in entries.into_iter().enumerate() {
            let base = format!("devices[{i}]");
            if self.broken.contains(&base) {
                continue;
            }
            if let Some(Item::Value(Value::String(id))) = table.get("id") {
                parts.device_ids.push((i, id.value().clone()));
            }
            if let Some(device) = self.section::<DeviceConfig>(table, &base, span) {
                parts.devices.push((i, device));
            }
        }
    }

    /// Where in the file `path` (`uplink.mqtt.port`, `devices[2].kind`) is: the value for
    /// a leaf, the header for a table; the nearest present ancestor for a key left out.
    /// The flag says whether the whole path is present.
    fn locate(&self, path: &str) -> (Option<Range<usize>>, bool) {
        let mut best = None;
        let mut current: Option<&dyn TableLike> = Some(self.root);
        for segment in split_path(path) {
            let segment = segment.as_str();
            let (name, index) = match segment.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (segment, None),
            };
            let Some((key, item)) = current.and_then(|t| t.get_key_value(name)) else {
                return (best, false);
            };
            best = item.span().or_else(|| key.span()).or(best);
            current = item.as_table_like();
            if let Some(i) = index {
                match item {
                    Item::ArrayOfTables(aot) => match aot.get(i) {
                        Some(t) => {
                            best = t.span().or(best);
                            current = Some(t);
                        }
                        None => return (best, false),
                    },
                    Item::Value(Value::Array(array)) => match array.get(i) {
                        Some(v) => {
                            best = v.span().or(best);
                            current = v.as_inline_table().map(|t| t as &dyn TableLike);
                        }
                        None => return (best, false),
                    },
                    _ => return (best, false),
                }
            }
        }
        (best, true)
    }
}

/// The segments of a key path; a segment in double quotes (`alerts.severity."VID.LOITER"`)
/// may hold dots and is returned without its quotes.
fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The key path, relative to `table`, of the entry whose key or value holds `span`.
/// Nested tables are searched first so the deepest key wins.
fn find_key(table: &dyn TableLike, span: &Range<usize>) -> Option<Vec<String>> {
    for (name, item) in table.iter() {
        if let Some(inner) = item.as_table_like() {
            if let Some(mut rest) = find_key(inner, span) {
                rest.insert(0, name.to_owned());
                return Some(rest);
            }
        }
        let key_span = table.key(name).and_then(|k| k.span());
        if contains(item.span(), span) || contains(key_span, span) {
            return Some(vec![name.to_owned()]);
        }
    }
    None
}

fn contains(outer: Option<Range<usize>>, inner: &Range<usize>) -> bool {
    outer.is_some_and(|o| o.start <= inner.start && inner.end <= o.end)
}

fn remove(table: &mut dyn TableLike, rel: &[String]) {
    match rel {
        [] => {}
        [last] => {
            table.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(inner) = table.get_mut(first).and_then(|i| i.as_table_like_mut()) {
                remove(inner, rest);
            }
        }
    }
}

fn join(base: &str, rel: &[String]) -> String {
    let mut path = base.to_owned();
    for key in rel {
        path.push('.');
        path.push_str(key);
    }
    path
}

/// The field name of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => v.type_name(),
        Item::Table(_) => "table",
        Item::ArrayOfTables(_) => "array of tables",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let src = Source::new("f", "a = 1\n# 小区\nb = 2\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        let b = src.text.find('b').expect("b");
        assert_eq!(src.line_col(b), (3, 1));
        let after_cjk = src.text.find("区").expect("cjk") + "区".len();
        assert_eq!(src.line_col(after_cjk), (2, 5));
    }

    #[test]
    fn quoted_path_segments_keep_their_dots() {
        assert_eq!(
            split_path(r#"alerts.severity."VID.LOITER""#),
            ["alerts", "severity", "VID.LOITER"]
        );
        assert_eq!(split_path("a.b[2].c"), ["a", "b[2]", "c"]);
    }

    #[test]
    fn missing_field_reads_serde_message() {
        assert_eq!(missing_field("missing field `id`"), Some("id"));
        assert_eq!(missing_field("unknown field `x`"), None);
    }
}
