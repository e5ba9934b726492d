//! A zone's `log`: which of its answers the query log writes (see
//! [`crate::observe::querylog`]). `true` is every answer, `false` (the default) none, and a
//! list names classes of answers as CoreDNS's `log { class ... }` does: `success` (NOERROR
//! with records), `denial` (NXDOMAIN, and NOERROR without an answer: NODATA), `error`
//! (every other rcode), `all`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A class of answers, as CoreDNS's `log` plugin classifies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    Success,
    Denial,
    Error,
}

impl AnswerClass {
    const ALL: [AnswerClass; 3] = [
        AnswerClass::Success,
        AnswerClass::Denial,
        AnswerClass::Error,
    ];

    /// The class of an answer with `rcode` and `answers` records in its answer section.
    pub fn of(rcode: u16, answers: u16) -> AnswerClass {
        match (rcode, answers) {
            (0, 0) | (3, _) => AnswerClass::Denial,
            (0, _) => AnswerClass::Success,
            _ => AnswerClass::Error,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AnswerClass::Success => "success",
            AnswerClass::Denial => "denial",
            AnswerClass::Error => "error",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The classes of answers a zone logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneLog(u8);

impl ZoneLog {
    /// Every answer.
    pub const ALL: ZoneLog = ZoneLog(0b111);

    /// Answers of these classes.
    pub fn of(classes: &[AnswerClass]) -> ZoneLog {
        ZoneLog(classes.iter().fold(0, |bits, class| bits | class.bit()))
    }

    /// Whether no answer is logged.
    pub fn is_off(&self) -> bool {
        self.0 == 0
    }

    /// Whether an answer of `class` is logged.
    pub fn logs(self, class: AnswerClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// Reads a class name of CoreDNS's `log` (`all` is every class).
    pub fn parse_class(name: &str) -> Option<ZoneLog> {
        if name == "all" {
            return Some(ZoneLog::ALL);
        }
        let class = AnswerClass::ALL.into_iter().find(|c| c.name() == name)?;
        Some(ZoneLog::of(&[class]))
    }

    /// Both sets of classes.
    pub fn with(self, other: ZoneLog) -> ZoneLog {
        ZoneLog(self.0 | other.0)
    }
}

impl Serialize for ZoneLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            ZoneLog(0) => serializer.serialize_bool(false),
            ZoneLog::ALL => serializer.serialize_bool(true),
            classes => {
                let names: Vec<&str> = AnswerClass::ALL
                    .into_iter()
                    .filter(|c| classes.logs(*c))
                    .map(AnswerClass::name)
                    .collect();
                let mut seq = serializer.serialize_seq(Some(names.len()))?;
                for name in names {
                    seq.serialize_element(name)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ZoneLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ZoneLog, D::Error> {
        struct ZoneLogVisitor;
        impl<'de> Visitor<'de> for ZoneLogVisitor {
            type Value = ZoneLog;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a list of success, denial, error, all")
            }

            fn visit_bool<E: de::Error>(self, all: bool) -> Result<ZoneLog, E> {
                Ok(if all { ZoneLog::ALL } else { ZoneLog(0) })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ZoneLog, A::Error> {
                let mut log = ZoneLog(0);
                while let Some(name) = seq.next_element::<String>()? {
                    let class = ZoneLog::parse_class(&name).ok_or_else(|| {
                        de::Error::custom(format!(
                            "unknown class `{name}` (success, denial, error, all)"
                        ))
                    })?;
                    log = log.with(class);
                }
                Ok(log)
            }
        }
        deserializer.deserialize_any(ZoneLogVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classed_as_coredns_classes_them() {
        assert_eq!(AnswerClass::of(0, 2), AnswerClass::Success);
        assert_eq!(AnswerClass::of(0, 0), AnswerClass::Denial, "NODATA");
        assert_eq!(AnswerClass::of(3, 0), AnswerClass::Denial, "NXDOMAIN");
        assert_eq!(AnswerClass::of(2, 0), AnswerClass::Error);
        assert_eq!(AnswerClass::of(5, 0), AnswerClass::Error);
    }

    #[test]
    fn a_zone_log_reads_a_flag_or_classes_and_prints_the_same() {
        let read = |text: &str| serde_yaml_ng::from_str::<ZoneLog>(text);
        assert_eq!(read("true").unwrap(), ZoneLog::ALL);
        assert!(read("false").unwrap().is_off());
        let some = read("[denial, error]").unwrap();
        assert!(some.logs(AnswerClass::Denial) && some.logs(AnswerClass::Error));
        assert!(!some.logs(AnswerClass::Success));
        assert_eq!(read("[all]").unwrap(), ZoneLog::ALL);
        assert!(
            read("[loud]")
                .unwrap_err()
                .to_string()
                .contains("unknown class `loud`")
        );
        for text in ["true", "false", "[denial, error]"] {
            let printed = serde_yaml_ng::to_string(&read(text).unwrap()).unwrap();
            assert_eq!(read(&printed).unwrap(), read(text).unwrap(), "{text}");
        }
    }
}
