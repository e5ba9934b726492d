//! The one reader of Prometheus text exposition format for the tests: `/metrics` (or a
//! `Metrics::render`) parsed strictly, then looked up by metric name and exact label values.
//!
//! A look-up names the series it wants: [`Exposition::value`] is one series, and says so when
//! the labels given match several; a total over several series is asked for as such, with
//! [`Exposition::sum`]. Label values are compared whole, never as substrings.

use std::collections::BTreeMap;

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether this is a sample of `name` with every `label=value` of `labels`.
    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// A parsed exposition.
#[derive(Debug, Clone)]
pub struct Exposition {
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses Prometheus text exposition format strictly, panicking on what is not: every
    /// line is a `# HELP`, a `# TYPE` or a sample of a declared family; label values are
    /// quoted and escaped properly; values parse; histogram buckets are cumulative and end in
    /// `+Inf` equal to `_count`.
    pub fn parse(text: &str) -> Exposition {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has a name and text");
                assert!(valid_name(name), "bad metric name in {line:?}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type in {line:?}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "family {name} declared twice"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line:?}");
            assert!(!line.is_empty(), "empty line in exposition");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    parse_labels(rest.strip_suffix('}').expect("labels end with }")),
                ),
                None => (series, BTreeMap::new()),
            };
            assert!(valid_name(name), "bad metric name in {line:?}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample {name} has no TYPE");
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        check_histograms(&types, &samples);
        Exposition { samples }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The value of the one series of `name` that has every `label=value` of `labels`; 0 when
    /// there is none (a labelled series appears with its first count). Panics when several
    /// series match: the caller either names the series fully or asks for [`Exposition::sum`].
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.matches(name, labels))
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} series, {:?}: name one, or sum them",
            found.len(),
            found.iter().map(|s| &s.labels).collect::<Vec<_>>()
        );
        found.first().map_or(0.0, |s| s.value)
    }

    /// The total over every series of `name` that has every `label=value` of `labels` (all of
    /// its series for no labels); 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.matches(name, labels))
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(mut text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"").expect("label is key=\"value\"");
        assert!(valid_name(key), "bad label name {key:?}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("label value is closed") {
                (_, '\\') => match chars.next().expect("escape has a character") {
                    (_, 'n') => value.push('\n'),
                    (_, c @ ('\\' | '"')) => value.push(c),
                    (_, c) => panic!("bad escape \\{c}"),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(key.to_string(), value).is_none(),
            "label {key} twice"
        );
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    labels
}

/// A histogram bucket: upper bound and cumulative count.
type Bucket = (f64, f64);

/// Buckets never decrease, and `+Inf` equals `_count`, per series.
fn check_histograms(types: &BTreeMap<String, String>, samples: &[Sample]) {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket = format!("{family}_bucket");
        let count = format!("{family}_count");
        // Labels without `le` -> (le, cumulative count) per bucket.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<Bucket>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == bucket) {
            let le: f64 = match sample.labels.get("le").expect("a bucket has le").as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().expect("le is a number"),
            };
            let mut key = sample.labels.clone();
            key.remove("le");
            series.entry(key).or_default().push((le, sample.value));
        }
        for (key, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {key:?}: buckets not cumulative: {buckets:?}"
            );
            let (last_le, last) = *buckets.last().expect("a bucket");
            assert_eq!(last_le, f64::INFINITY, "{family} {key:?} ends without +Inf");
            let total = samples
                .iter()
                .find(|s| s.name == count && s.labels == key)
                .map(|s| s.value);
            assert_eq!(total, Some(last), "{family} {key:?}: _count is not +Inf");
        }
    }
}
