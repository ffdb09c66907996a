//! Loading `[modbus]` and the profile files it names.
//!
//! `[modbus]` is read like any section, except that each `[[modbus.buses]]` entry is
//! deserialized on its own (one bad bus does not hide the others). Profile files are
//! TOML files of `[[profiles]]`, each with `[[profiles.points]]`; every profile and every
//! point is deserialized on its own, and problems in a profile file are located in that
//! file. Cross-references (a device's bus and profile, a profile's kind) are checked
//! against the main file and reported there.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, Table, Value};

use super::{describe, Loader, Section, Source};
use crate::error::ConfigProblem;
use crate::modbus::{BusConfig, ModbusConfig, Point, Profile};
use crate::validate::modbus as validate_modbus;
use crate::validate::{Finding, ModbusParts};

impl Loader<'_> {
    /// Reads `[modbus]`, its buses and its profile files.
    pub(super) fn modbus(&mut self) -> ModbusParts {
        let mut out = ModbusParts {
            profiles_complete: true,
            ..ModbusParts::default()
        };
        let (table, span) = match self.table("modbus") {
            Section::Absent => {
                out.config = Some(ModbusConfig::default());
                return out;
            }
            Section::Broken => return out,
            Section::Table(t, span) => (t, span),
        };
        let mut head = table.clone();
        let buses_item = head.remove("buses");
        let Some(mut config) = self.section::<ModbusConfig>(head, "modbus", span) else {
            out.profiles_complete = false;
            return out;
        };
        if let Some(item) = buses_item {
            for (i, t, span) in self.entries("modbus.buses", "bus", &item) {
                let base = format!("modbus.buses[{i}]");
                let name = t.get("name").and_then(|n| n.as_str()).map(str::to_owned);
                match self.section::<BusConfig>(t, &base, span) {
                    Some(bus) => {
                        out.bus_names.insert(bus.name.clone(), Some(bus.transport));
                        out.buses.push((i, bus));
                    }
                    None => {
                        if let Some(name) = name {
                            out.bus_names.entry(name).or_insert(None);
                        }
                    }
                }
            }
        }
        config.buses = out.buses.iter().map(|(_, b)| b.clone()).collect();

        let base_dir = Path::new(self.src.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut loaded: Vec<Profile> = Vec::new();
        for (k, rel) in config.profile_files.iter().enumerate() {
            let path = base_dir.join(rel);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(err) => {
                    out.profiles_complete = false;
                    let key = format!("modbus.profile_files[{k}]");
                    let span = self.locate(&key).0;
                    let message = format!("cannot read profile file {}: {err}", path.display());
                    self.problems.push(self.src.problem(span, key, message));
                    continue;
                }
            };
            let file = load_profile_file(&path, &text);
            out.profiles_complete &= file.parsed;
            for (name, problem_span) in &file.names {
                if let Some(first) = loaded.iter().find(|p| &p.name == name) {
                    let src = Source::new(&file.display, &text);
                    out.profile_problems.push(src.problem(
                        problem_span.clone(),
                        "",
                        format!(
                            "duplicate profile name {name:?}, already defined in {}",
                            first.file.display()
                        ),
                    ));
                }
            }
            out.profile_names
                .extend(file.names.into_iter().map(|(n, _)| n));
            out.profile_problems.extend(file.problems);
            for p in file.profiles {
                if !loaded.iter().any(|l| l.name == p.name) {
                    loaded.push(p);
                }
            }
        }
        config.profiles = loaded;
        out.config = Some(config);
        out
    }

    /// The entries of an array of tables (`[[x]]` or `x = [{…}, …]`), with their index;
    /// entries that are not tables are reported and skipped.
    pub(super) fn entries(
        &mut self,
        path: &str,
        what: &str,
        item: &Item,
    ) -> Vec<(usize, Table, Option<Range<usize>>)> {
        let mut out = Vec::new();
        match item {
            Item::ArrayOfTables(aot) => {
                out.extend(
                    aot.iter()
                        .enumerate()
                        .map(|(i, t)| (i, t.clone(), t.span())),
                );
            }
            Item::Value(Value::Array(array)) => {
                for (i, value) in array.iter().enumerate() {
                    match value {
                        Value::InlineTable(t) => {
                            out.push((i, t.clone().into_table(), value.span()))
                        }
                        other => {
                            let message =
                                format!("each {what} must be a table, found {}", other.type_name());
                            self.mark_broken(format!("{path}[{i}]"), other.span(), message);
                        }
                    }
                }
            }
            other => {
                let message = format!(
                    "must be a list of tables ([[{path}]]), found {}",
                    describe(other)
                );
                self.mark_broken(path.to_owned(), other.span(), message);
            }
        }
        out
    }

    /// Turns findings into located problems, skipping those about keys already reported
    /// as broken, and pointing at a key the user wrote rather than one left to its default.
    pub(super) fn report(&mut self, findings: Vec<Finding>) {
        for finding in findings {
            let involved = std::iter::once(&finding.path).chain(&finding.involves);
            if involved.clone().any(|p| self.is_broken(p)) {
                continue;
            }
            let mut message = finding.message;
            if let Some(related) = &finding.related {
                if let Some((line, _)) = self.locate(related).0.map(|s| self.src.line_col(s.start))
                {
                    message.push_str(&format!(" (line {line})"));
                }
            }
            let path = std::iter::once(&finding.path)
                .chain(&finding.involves)
                .find(|p| self.locate(p).1)
                .unwrap_or(&finding.path);
            let span = self.locate(path).0;
            self.problems
                .push(self.src.problem(span, path.clone(), message));
        }
    }
}

/// One profile file, loaded.
struct ProfileFile {
    display: String,
    /// The TOML parsed (a syntax error is one problem and nothing else).
    parsed: bool,
    profiles: Vec<Profile>,
    /// Every profile name in the file with where it is written.
    names: Vec<(String, Option<Range<usize>>)>,
    problems: Vec<ConfigProblem>,
}

fn load_profile_file(path: &Path, text: &str) -> ProfileFile {
    let display = path.display().to_string();
    let mut out = ProfileFile {
        display: display.clone(),
        parsed: false,
        profiles: Vec::new(),
        names: Vec::new(),
        problems: Vec::new(),
    };
    let src = Source::new(&display, text);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim_end().replace('\n', "; ");
            out.problems.push(src.problem(e.span(), "", message));
            return out;
        }
    };
    out.parsed = true;
    let mut loader = Loader {
        src,
        root: doc.as_table(),
        problems: Vec::new(),
        broken: Default::default(),
    };
    for (key, item) in loader.root.iter() {
        if key != "profiles" {
            let span = loader
                .root
                .key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span());
            let message = format!("unknown key `{key}`; a profile file holds only [[profiles]]");
            loader.problems.push(loader.src.problem(span, key, message));
        }
    }
    let mut good: Vec<(usize, Profile)> = Vec::new();
    if let Some(item) = loader.root.get("profiles") {
        for (i, table, span) in loader.entries("profiles", "profile", item) {
            let base = format!("profiles[{i}]");
            if let Some(n) = table.get("name") {
                if let Some(name) = n.as_str() {
                    out.names.push((name.to_owned(), n.span()));
                }
            }
            let mut head = table.clone();
            let points_item = head.remove("points");
            let profile = loader.section::<Profile>(head, &base, span.clone());
            let mut points: Vec<Point> = Vec::new();
            match &points_item {
                Some(item) => {
                    let path = format!("{base}.points");
                    for (j, t, pspan) in loader.entries(&path, "point", item) {
                        if let Some(p) = loader.section::<Point>(t, &format!("{path}[{j}]"), pspan)
                        {
                            points.push(p);
                        }
                    }
                }
                None => {
                    let message = "a profile needs at least one [[profiles.points]]";
                    loader.mark_broken(base.clone(), span.clone(), message.to_owned());
                }
            }
            if let Some(mut profile) = profile {
                profile.points = points;
                profile.file = PathBuf::from(&display);
                good.push((i, profile));
            }
        }
    } else {
        let message = "a profile file holds one or more [[profiles]]";
        loader
            .problems
            .push(loader.src.problem(None, "profiles", message));
    }
    let mut findings = Vec::new();
    validate_modbus::check_profiles(&good, &mut findings);
    loader.report(findings);
    let mut problems = std::mem::take(&mut loader.problems);
    problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column.unwrap_or(0)));
    out.problems = problems;
    out.profiles = good.into_iter().map(|(_, p)| p).collect();
    out
}
