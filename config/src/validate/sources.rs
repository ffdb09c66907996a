//! The rules of `[[ingest.sources]]` and the devices' `source`: names, topic filters
//! (valid, not overlapping), format-specific keys and taxonomy codes.

use std::collections::hash_map::{Entry, HashMap};
use std::time::Duration;

use super::core::check_id;
use super::findings::{Finding, Findings, Parts};
use crate::sources::*;

/// The rules for `[[ingest.sources]]` and the devices' `source`.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    let Some(ingest) = &parts.ingest else {
        return;
    };
    // `ingest.sources` holds only the tables that became a source; `parts.sources` every
    // one that deserialized.
    if ingest.sources.is_some() && parts.sources.is_empty() && parts.sources_complete {
        f.at(
            "ingest.sources",
            "lists no source, so nothing would be read; remove it to read the native format only",
        );
    }
    check_names(parts, f);
    // Per source: topics, format-specific keys.
    let mut all_filters: Vec<Filter> = Vec::new();
    let estate = parts.gateway.as_ref().map(|g| g.estate_id.as_str());
    for (i, s) in &parts.sources {
        check_source(*i, s, &ingest.topic_prefix, estate, &mut all_filters, f);
    }
    check_overlaps(&all_filters, f);
    check_device_sources(parts, ingest.sources.is_some(), f);
}

/// A topic filter a source reads: (source index, the key that sets it, the filter).
type Filter = (usize, String, String);

/// Names: valid and unique among all sources that have one (a source without `name` is
/// named after its format, so its problem is located at `format`).
fn check_names(parts: &Parts, f: &mut Findings) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in &parts.source_names {
        let explicit = parts
            .sources
            .iter()
            .find(|(j, _)| j == i)
            .is_none_or(|(_, s)| s.name.is_some());
        let path = if explicit {
            format!("ingest.sources[{i}].name")
        } else {
            format!("ingest.sources[{i}].format")
        };
        check_id(&path, name, &['-', '_'], 64, f);
        match seen.entry(name.as_str()) {
            Entry::Occupied(first) => f.0.push(Finding {
                path,
                involves: Vec::new(),
                related: Some(format!("ingest.sources[{}]", first.get())),
                message: format!(
                    "duplicate source name {name:?}, already used by ingest.sources[{}]; give one of them a different `name`",
                    first.get()
                ),
            }),
            Entry::Vacant(slot) => {
                slot.insert(*i);
            }
        }
    }
}

/// One source's topics and format-specific keys; its valid topic filters (or those its
/// format reads by default) go to `filters` for the overlap check.
fn check_source(
    i: usize,
    s: &SourceTable,
    topic_prefix: &str,
    estate: Option<&str>,
    filters: &mut Vec<Filter>,
    f: &mut Findings,
) {
    let base = format!("ingest.sources[{i}]");
    match (s.format, &s.topics) {
        (SourceFormat::Native, Some(_)) => f.at(
            format!("{base}.topics"),
            "the native format always reads `topic_prefix`/{estate_id}/…; remove `topics`",
        ),
        (SourceFormat::JsonMap, None) => f.at(
            format!("{base}.format"),
            "json-map needs `topics`: the MQTT topic filters its devices publish to",
        ),
        (_, Some(t)) if t.is_empty() => f.at(
            format!("{base}.topics"),
            "must list at least one topic filter",
        ),
        _ => {}
    }
    if let Some(topics) = &s.topics {
        for (k, t) in topics.iter().enumerate() {
            if let Some(why) = topic_filter_problem(t) {
                f.at(format!("{base}.topics[{k}]"), format!("{t:?} {why}"));
            } else {
                filters.push((i, format!("{base}.topics[{k}]"), t.clone()));
            }
        }
    } else if s.format == SourceFormat::Native {
        if let Some(estate) = estate {
            for leaf in ["event", "heartbeat"] {
                filters.push((
                    i,
                    format!("{base}.format"),
                    format!("{}/{estate}/+/+/{leaf}", topic_prefix),
                ));
            }
        }
    } else {
        for t in s.format.default_topics() {
            filters.push((i, format!("{base}.format"), (*t).to_owned()));
        }
    }
    for (key, why) in s.format_key_problems() {
        f.at(format!("{base}.{key}"), why);
    }
    if let (SourceFormat::CameraIsapiJson, Some(after)) = (s.format, s.clear_after) {
        check_clear_after(format!("{base}.clear_after"), after, f);
    }
    if let (SourceFormat::JsonMap, Some(map)) = (s.format, &s.map) {
        check_map(&base, s, map, f);
    }
}

/// Two sources whose filters share a topic would both receive (or fight over) it.
/// A camera alarm's `clear_after` (a source's, or camera push's): 1 s to 1 h.
pub(super) fn check_clear_after(path: String, after: Duration, f: &mut Findings) {
    if after < Duration::from_secs(1) || after > Duration::from_secs(3600) {
        f.at(
            path,
            format!(
                "must be between 1s and 1h (cameras repeat about once a second), found {}",
                humantime::format_duration(after)
            ),
        );
    }
}

fn check_overlaps(all_filters: &[Filter], f: &mut Findings) {
    for (n, (i, path, a)) in all_filters.iter().enumerate() {
        if let Some((j, other, b)) = all_filters[..n]
            .iter()
            .find(|(j, _, b)| j != i && filters_overlap(a, b))
        {
            f.0.push(Finding {
                path: path.clone(),
                involves: Vec::new(),
                related: Some(other.clone()),
                message: format!(
                    "topic filter {a:?} overlaps {b:?} of ingest.sources[{j}]: a message on a topic both match would be read by two sources"
                ),
            });
        }
    }
}

/// Devices known by their source's own id: a source that exists and is not native, and
/// an id unique within it. `listed`: the config has an `[[ingest.sources]]` list.
fn check_device_sources(parts: &Parts, listed: bool, f: &mut Findings) {
    let mut sources: HashMap<&str, SourceFormat> = parts
        .sources
        .iter()
        .map(|(_, s)| (s.effective_name(), s.format))
        .collect();
    // `[ingest.camera_push]` names cameras like a camera-isapi-json source does.
    let push = parts
        .ingest
        .as_ref()
        .and_then(|i| i.camera_push.as_ref())
        .map(|p| p.name.as_str());
    if let Some(name) = push {
        sources.entry(name).or_insert(SourceFormat::CameraIsapiJson);
    }
    let mut ids: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, d) in &parts.devices {
        let Some(src) = &d.source else {
            continue;
        };
        let path = format!("devices[{i}].source");
        if !listed && push != Some(src.name.as_str()) {
            f.at(
                format!("{path}.name"),
                format!(
                    "names source {:?}, but there is no [[ingest.sources]] list (only the native format is read) and no [ingest.camera_push] of that name",
                    src.name
                ),
            );
            continue;
        }
        match sources.get(src.name.as_str()) {
            Some(SourceFormat::Native) => f.at(
                format!("{path}.name"),
                format!(
                    "{:?} is a native source, whose devices are known by their `id`; remove `source`",
                    src.name
                ),
            ),
            None if parts.sources_complete => {
                let mut known: Vec<&str> = sources.keys().copied().collect();
                known.sort_unstable();
                f.at(
                    format!("{path}.name"),
                    format!(
                        "no [[ingest.sources]] entry is named {:?}; known: {}",
                        src.name,
                        known.join(", ")
                    ),
                )
            }
            _ => {}
        }
        if src.id.is_empty() {
            f.at(format!("{path}.id"), "must not be empty");
            continue;
        }
        match ids.entry((src.name.as_str(), src.id.as_str())) {
            Entry::Occupied(first) => f.0.push(Finding {
                path: format!("{path}.id"),
                involves: Vec::new(),
                related: Some(format!("devices[{}].source", first.get())),
                message: format!(
                    "source {:?} id {:?} is already devices[{}]",
                    src.name,
                    src.id,
                    first.get()
                ),
            }),
            Entry::Vacant(slot) => {
                slot.insert(*i);
            }
        }
    }
}

fn check_map(base: &str, s: &SourceTable, map: &JsonMap, f: &mut Findings) {
    let key = |k: &str| format!("{base}.map.{k}");
    let pointers = [
        ("device_id", Some(&map.device_id)),
        ("code_field", Some(&map.code_field)),
        ("state_field", map.state_field.as_ref()),
        ("time_field", map.time_field.as_ref()),
        ("value_field", map.value_field.as_ref()),
        ("seq_field", map.seq_field.as_ref()),
    ];
    for (k, p) in pointers {
        if let Some(p) = p {
            if !p.starts_with('/') {
                f.at(
                    key(k),
                    format!(
                        "{p:?} is not a JSON pointer; write it like \"/object/{}\"",
                        p.trim_start_matches('/')
                    ),
                );
            }
        }
    }
    if map.codes.is_empty() {
        f.at(
            key("codes"),
            "must map at least one source value to an event code",
        );
    }
    for (value, code) in &map.codes {
        if estate_protocols::taxonomy::lookup(code).is_none() {
            f.at(
                key("codes"),
                format!("{value:?} maps to {code:?}, which is not an event code of the taxonomy (see docs/protocol.md, \"Event codes\")"),
            );
        }
    }
    if let Some(both) = map.active.iter().find(|a| map.cleared.contains(a)) {
        f.across(
            key("active"),
            &[key("cleared")],
            format!("{both:?} is listed both as active and as cleared"),
        );
    }
    if let Some(t) = &map.availability_topic {
        if let Some(why) = topic_filter_problem(t) {
            f.at(key("availability_topic"), format!("{t:?} {why}"));
        } else if !s
            .effective_topics()
            .iter()
            .any(|filter| filters_overlap(filter, t))
        {
            f.at(
                key("availability_topic"),
                format!(
                    "{t:?} is not covered by this source's `topics`, so it would never be received"
                ),
            );
        }
    }
    if map.online == map.offline {
        f.at(key("offline"), "must differ from `online`");
    }
}
