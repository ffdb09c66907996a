//! The Prometheus text of `/metrics` ([`Metrics`]), parsed with the `prometheus-parse` crate.

#[allow(unused_imports)]
use super::*;

use prometheus_parse::{Scrape, Value};

/// One sample of the Prometheus text exposition (a histogram gives one `_bucket` sample
/// per bucket, with its `le` label, as in the text).
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's name as written (`…_bucket` for a histogram bucket).
    pub name: String,
    /// Its labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// A parsed `/metrics` response.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The exposition as received.
    pub text: String,
    /// Every sample, in the parser's order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the exposition; lines the parser cannot read are left out.
    pub fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines).unwrap_or(Scrape {
            docs: Default::default(),
            samples: Vec::new(),
        });
        let samples = scrape.samples.into_iter().flat_map(flatten).collect();
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

/// One parsed sample as the text's samples: a histogram back into its `_bucket` lines
/// (`le` label), a summary into its `quantile` lines.
fn flatten(s: prometheus_parse::Sample) -> Vec<Sample> {
    let mut labels: Vec<(String, String)> = s
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.sort();
    let with = |key: &str, bound: f64| {
        let mut l = labels.clone();
        l.push((key.to_owned(), format_bound(bound)));
        l
    };
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => vec![Sample {
            name: s.metric,
            labels,
            value: v,
        }],
        Value::Histogram(buckets) => buckets
            .iter()
            .map(|b| Sample {
                name: format!("{}_bucket", s.metric),
                labels: with("le", b.less_than),
                value: b.count,
            })
            .collect(),
        Value::Summary(quantiles) => quantiles
            .iter()
            .map(|q| Sample {
                name: s.metric.clone(),
                labels: with("quantile", q.quantile),
                value: q.count,
            })
            .collect(),
    }
}

/// A bucket bound as the exposition writes it (`+Inf` for infinity).
fn format_bound(b: f64) -> String {
    if b.is_infinite() {
        "+Inf".to_owned()
    } else {
        b.to_string()
    }
}
