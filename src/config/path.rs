//! Where a field sits in the config, such as `zones[1].pool.queue.timeout`. The checks that find
//! a field wrong build one ([`FieldPath::zone`], [`FieldPath::key`]), errors show it, the
//! Corefile translation asks it which zone it is in, and [`FieldPath::line_in`] walks it
//! through the YAML text to the line the user wrote.

use std::fmt;

/// A field's place in the config: keys and sequence items from the top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Item(usize),
}

/// A check's finding: the field that is wrong, and why.
pub type Invalid = (FieldPath, String);

impl FieldPath {
    /// The top-level field `key`; a dotted key (`server.max_udp_size`) is a key of a key.
    pub fn top(key: &str) -> FieldPath {
        FieldPath::default().key(key)
    }

    /// The zone `zones[index]`.
    pub fn zone(index: usize) -> FieldPath {
        FieldPath::top("zones").item(index)
    }

    /// This field's field `key`; a dotted key is a key of a key.
    pub fn key(mut self, key: &str) -> FieldPath {
        self.0
            .extend(key.split('.').map(|part| Step::Key(part.to_string())));
        self
    }

    /// Item `index` of this sequence.
    pub fn item(mut self, index: usize) -> FieldPath {
        self.0.push(Step::Item(index));
        self
    }

    /// The field at `relative` below this one.
    pub fn join(mut self, relative: &FieldPath) -> FieldPath {
        self.0.extend(relative.0.iter().cloned());
        self
    }

    /// The `index` of `zones[index]` when the field is in a zone.
    pub fn zone_index(&self) -> Option<usize> {
        match self.0.as_slice() {
            [Step::Key(key), Step::Item(index), ..] if key == "zones" => Some(*index),
            _ => None,
        }
    }

    /// The path serde reports for a value it could not read.
    pub(super) fn from_serde(path: &serde_path_to_error::Path) -> FieldPath {
        use serde_path_to_error::Segment;
        let steps = path.iter().map(|segment| match segment {
            Segment::Seq { index } => Step::Item(*index),
            Segment::Map { key } => Step::Key(key.clone()),
            Segment::Enum { variant } => Step::Key(variant.clone()),
            Segment::Unknown => Step::Key("?".into()),
        });
        FieldPath(steps.collect())
    }

    /// The line (1-based) of this field in block-style YAML `text`, for errors found after
    /// parsing. Best effort: `None` when the field is not written out (it took its default);
    /// in a flow sequence (`[a, b]`) the key's line is the nearest.
    pub fn line_in(&self, text: &str) -> Option<usize> {
        let lines = YamlLines::new(text);
        let (mut from, mut to) = (0, lines.len());
        let mut found = None;
        for step in &self.0 {
            match step {
                Step::Key(key) => {
                    let at = lines.key_at(key, from..to)?;
                    to = lines.value_end(at, to);
                    from = at + 1;
                    found = Some(at);
                }
                Step::Item(index) => {
                    let Some(items) = lines.items(from..to) else {
                        break;
                    };
                    let item = *items.get(*index)?;
                    to = items.get(index + 1).copied().unwrap_or(to);
                    from = item;
                    found = Some(item);
                }
            }
        }
        found.map(|i| i + 1)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top)");
        }
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Item(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Block-style YAML as (indent, content) per line, enough to find where a key is written.
struct YamlLines<'a>(Vec<(usize, &'a str)>);

impl<'a> YamlLines<'a> {
    fn new(text: &'a str) -> YamlLines<'a> {
        let lines = text
            .lines()
            .map(|l| (l.len() - l.trim_start().len(), l.trim_start()))
            .collect();
        YamlLines(lines)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn blank(&self, i: usize) -> bool {
        let content = self.0[i].1;
        content.is_empty() || content.starts_with('#')
    }

    /// A line's key and its indent; a leading "- " counts as indentation of the key after it.
    fn key_of(&self, i: usize) -> (usize, &'a str) {
        let (indent, content) = self.0[i];
        match content.strip_prefix("- ") {
            Some(rest) => (
                indent + 2 + rest.len() - rest.trim_start().len(),
                rest.trim_start(),
            ),
            None => (indent, content),
        }
    }

    /// The least indented line of `range` that writes `key:`.
    fn key_at(&self, key: &str, range: std::ops::Range<usize>) -> Option<usize> {
        let wanted = format!("{key}:");
        range
            .filter(|&i| !self.blank(i) && self.key_of(i).1.starts_with(&wanted))
            .min_by_key(|&i| self.key_of(i).0)
    }

    /// Where the value of the key at line `at` ends (before `to`): at the first line indented
    /// less, or as much without being a sequence item.
    fn value_end(&self, at: usize, to: usize) -> usize {
        let indent = self.key_of(at).0;
        (at + 1..to)
            .find(|&i| {
                let (line_indent, content) = self.0[i];
                !self.blank(i)
                    && (line_indent < indent
                        || (line_indent == indent && !content.starts_with("- ")))
            })
            .unwrap_or(to)
    }

    /// The first line of each item of the block sequence in `range`; `None` when it has none
    /// (a flow sequence).
    fn items(&self, range: std::ops::Range<usize>) -> Option<Vec<usize>> {
        let items: Vec<usize> = range.filter(|&i| self.0[i].1.starts_with("- ")).collect();
        let item_indent = items.iter().map(|&i| self.0[i].0).min()?;
        Some(
            items
                .into_iter()
                .filter(|&i| self.0[i].0 == item_indent)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "listen: [\"127.0.0.1:53\"]\nserver:\n  max_udp_size: 100\nzones:\n  - name: a\n    upstreams: [\"10.0.0.1\"]\n  - name: b\n    pool:\n      queue:\n        timeout: 0s\n";

    #[test]
    fn a_path_shows_as_written_and_names_its_zone() {
        let path = FieldPath::zone(1).key("pool.queue.timeout");
        assert_eq!(path.to_string(), "zones[1].pool.queue.timeout");
        assert_eq!(path.zone_index(), Some(1));
        assert_eq!(FieldPath::top("server.nsid").zone_index(), None);
        assert_eq!(FieldPath::default().to_string(), "(top)");
    }

    #[test]
    fn a_path_finds_the_line_its_field_is_written_on() {
        let line = |path: FieldPath| path.line_in(TEXT);
        assert_eq!(line(FieldPath::top("server.max_udp_size")), Some(3));
        assert_eq!(line(FieldPath::zone(0)), Some(5));
        assert_eq!(line(FieldPath::zone(1).key("name")), Some(7));
        assert_eq!(line(FieldPath::zone(1).key("pool.queue.timeout")), Some(10));
        // Not written out: took its default.
        assert_eq!(line(FieldPath::zone(0).key("pool")), None);
        // An item of a flow sequence: its key's line.
        assert_eq!(line(FieldPath::top("listen").item(0)), Some(1));
    }
}
