//! The Prometheus text of `/metrics` ([`Metrics`]).

#[allow(unused_imports)]
use super::*;

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` response.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics {
            text: text.to_owned(),
            samples,
        }
    }

    /// Sum of the samples named `name` whose labels include every `(key, value)` of
    /// `filter` (0 when there are none).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// [`Metrics::sum`] as an integer (counters and gauges here are whole numbers).
    pub fn n(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        self.sum(name, filter).max(0.0) as u64
    }

    /// Whether the exposition declares the metric family (`# TYPE family …`, or
    /// `# TYPE family_total counter` in the classic text format).
    pub fn has_family(&self, family: &str) -> bool {
        let total = format!("{family}_total");
        self.text.lines().any(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|name| name == family || name == total)
        })
    }

    /// Every sample except histogram buckets, one per line, for failure messages.
    pub fn summary(&self) -> String {
        self.samples
            .iter()
            .filter(|s| !s.name.ends_with("_bucket"))
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("  {}{{{}}} {}", s.name, labels.join(","), s.value)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(r) = rest.strip_prefix('{') {
        let end = r.find('}')?;
        for pair in r[..end].split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            labels.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
        }
        &r[end + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
