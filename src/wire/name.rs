//! Domain names in wire form.
//!
//! A [`Name`] is kept uncompressed and inline (no heap), so parsing a query allocates nothing.
//! Names read from a query's question are lowercased for keys and routing; the client's original
//! letter case is kept separately, as a [`LetterCase`] (one bit per byte, not a second name), so
//! answers can echo it (DNS 0x20 clients check it).
//!
//! Compression pointers are never followed while skipping names, so pointer loops and forward
//! pointers cannot make a reader spin; a question name that contains a pointer is malformed.

use std::fmt;
use std::hash::{Hash, Hasher};

use super::WireError;

/// RFC 1035 2.3.4: a name is at most 255 bytes in wire form, a label at most 63.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_LABEL_LEN: usize = 63;

/// Which bytes of a wire-form name were upper-case letters: one bit per byte, 32 bytes where a
/// copy of the name would take 256. A query keeps this beside its lowercased name, so every
/// query in flight carries one name, not two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LetterCase([u8; MAX_NAME_LEN.div_ceil(8)]);

impl LetterCase {
    /// No upper-case letters: the name as it is.
    pub const LOWER: LetterCase = LetterCase([0; MAX_NAME_LEN.div_ceil(8)]);

    /// Upper-cases the letters of `wire` (a name in wire form, or its first bytes) whose bits
    /// are set.
    pub fn apply(&self, wire: &mut [u8]) {
        for (chunk, bits) in wire.chunks_mut(8).zip(self.0) {
            if bits == 0 {
                continue;
            }
            for (bit, byte) in chunk.iter_mut().enumerate() {
                if bits & (1 << bit) != 0 {
                    byte.make_ascii_uppercase();
                }
            }
        }
    }
}

/// An uncompressed domain name in wire form (length-prefixed labels ending in the root label).
#[derive(Clone, Copy)]
pub struct Name {
    len: u8,
    buf: [u8; MAX_NAME_LEN],
}

impl Name {
    /// The root name `.`.
    pub const fn root() -> Name {
        Name {
            len: 1,
            buf: [0; MAX_NAME_LEN],
        }
    }

    /// The wire bytes, ending in the zero root label.
    pub fn as_wire(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Length of the wire form in bytes.
    pub fn wire_len(&self) -> usize {
        self.len as usize
    }

    pub fn is_root(&self) -> bool {
        self.len == 1
    }

    /// Parses presentation form (`cluster.local`, `cluster.local.` or `.`), lowercased, with
    /// RFC 1035 escapes (`\DDD` for any byte, `\X` for X itself, so `\.` is a dot inside a
    /// label): the inverse of [`Name::to_dotted`], so a name written out reads back as itself.
    pub fn from_dotted(text: &str) -> Result<Name, WireError> {
        let mut name = Name::root();
        if text.is_empty() || text == "." {
            return Ok(name);
        }
        let bytes = text.as_bytes();
        // The current label's length byte is at `start`; its bytes follow.
        let (mut start, mut len, mut i) = (0usize, 0usize, 0usize);
        while i < bytes.len() {
            let byte = match bytes[i] {
                b'.' => {
                    if len == 0 {
                        return Err(WireError::EmptyLabel);
                    }
                    name.buf[start] = len as u8;
                    (start, len) = (start + 1 + len, 0);
                    i += 1;
                    continue;
                }
                b'\\' => {
                    let (byte, used) = read_escape(&bytes[i + 1..])?;
                    i += 1 + used;
                    byte
                }
                b => {
                    i += 1;
                    b
                }
            };
            len += 1;
            if len > MAX_LABEL_LEN {
                return Err(WireError::LabelTooLong);
            }
            // This label's bytes, its length byte, and the root label after it.
            if start + 1 + len + 1 > MAX_NAME_LEN {
                return Err(WireError::NameTooLong);
            }
            name.buf[start + len] = byte.to_ascii_lowercase();
        }
        if len > 0 {
            name.buf[start] = len as u8;
            start += 1 + len;
        }
        name.buf[start] = 0;
        name.len = (start + 1) as u8;
        Ok(name)
    }

    /// Presentation form with a trailing dot (`cluster.local.`; the root is `.`).
    pub fn to_dotted(&self) -> String {
        if self.is_root() {
            return ".".to_string();
        }
        let mut out = String::with_capacity(self.wire_len());
        for label in self.labels() {
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('.');
        }
        out
    }

    /// The labels, leftmost first, without the root label.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: self.as_wire(),
            pos: 0,
        }
    }

    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// True when `self` is `zone` or a name below it (label-aligned, case-sensitive on the
    /// stored bytes; both sides are lowercased where they come from queries or config).
    pub fn is_subdomain_of(&self, zone: &Name) -> bool {
        let suffix = zone.as_wire();
        let wire = self.as_wire();
        let mut pos = 0usize;
        loop {
            if wire.len() - pos == suffix.len() {
                return &wire[pos..] == suffix;
            }
            if wire.len() - pos < suffix.len() || wire[pos] == 0 {
                return false;
            }
            pos += 1 + wire[pos] as usize;
        }
    }

    /// A copy with ASCII letters lowercased.
    pub fn to_lowercase(&self) -> Name {
        let mut lower = *self;
        lower.buf[..self.len as usize].make_ascii_lowercase();
        lower
    }

    /// The name lowercased, and where its upper-case letters were.
    pub fn split_case(&self) -> (Name, LetterCase) {
        // One pass over the bytes: every query's parse runs it.
        let mut lower = *self;
        let mut case = LetterCase::LOWER;
        for (at, byte) in lower.buf[..self.len as usize].iter_mut().enumerate() {
            if byte.is_ascii_uppercase() {
                case.0[at / 8] |= 1 << (at % 8);
                byte.make_ascii_lowercase();
            }
        }
        (lower, case)
    }

    /// A copy with `case` put back into its letters.
    pub fn with_case(&self, case: &LetterCase) -> Name {
        let mut cased = *self;
        case.apply(&mut cased.buf[..self.len as usize]);
        cased
    }

    /// The labels in front of `suffix` (wire form, without the root label) when `self` is
    /// strictly below `suffix`; `None` otherwise. Used by autopath to find the base name.
    pub fn prefix_before(&self, suffix: &Name) -> Option<&[u8]> {
        let cut = self.wire_len().checked_sub(suffix.wire_len())?;
        (cut > 0 && self.is_subdomain_of(suffix)).then(|| &self.as_wire()[..cut])
    }

    /// `prefix` (labels in wire form, as [`Name::prefix_before`] gives them) followed by
    /// `suffix`.
    pub fn concat(prefix: &[u8], suffix: &Name) -> Result<Name, WireError> {
        let len = prefix.len() + suffix.wire_len();
        if len > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        let mut name = Name::root();
        name.buf[..prefix.len()].copy_from_slice(prefix);
        name.buf[prefix.len()..len].copy_from_slice(suffix.as_wire());
        name.len = len as u8;
        Ok(name)
    }

    fn from_wire_unchecked(wire: &[u8]) -> Name {
        let mut name = Name::root();
        name.buf[..wire.len()].copy_from_slice(wire);
        name.len = wire.len() as u8;
        name
    }
}

/// Reads the escape after a backslash: three decimal digits (a byte value) or one character
/// standing for itself. Returns the byte and how many input bytes it took.
fn read_escape(rest: &[u8]) -> Result<(u8, usize), WireError> {
    match rest {
        [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let value = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            let byte = u8::try_from(value).map_err(|_| WireError::BadEscape)?;
            Ok((byte, 3))
        }
        [a, ..] if !a.is_ascii_digit() => Ok((*a, 1)),
        _ => Err(WireError::BadEscape),
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_wire() == other.as_wire()
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_wire().hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.to_dotted())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_dotted())
    }
}

/// Iterator over the labels of a [`Name`].
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = &self.wire[self.pos + 1..self.pos + 1 + len];
        self.pos += 1 + len;
        Some(label)
    }
}

/// Reads an uncompressed name at `pos` (a question name): returns it as received and the
/// position just after it. Any compression pointer is malformed here: the question is the
/// first name in a message, so there is nothing earlier a pointer could legally refer to.
pub fn read_uncompressed(msg: &[u8], mut pos: usize) -> Result<(Name, usize), WireError> {
    let start = pos;
    loop {
        let len = *msg.get(pos).ok_or(WireError::Truncated)? as usize;
        match len & 0xC0 {
            0x00 => {}
            0xC0 => return Err(WireError::PointerInQuestion),
            _ => return Err(WireError::BadLabelType),
        }
        if pos + 1 + len > msg.len() {
            return Err(WireError::Truncated);
        }
        pos += 1 + len;
        if pos - start > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        if len == 0 {
            return Ok((Name::from_wire_unchecked(&msg[start..pos]), pos));
        }
    }
}

/// Skips a possibly compressed name at `pos` without following pointers; returns the position
/// just after it in the message.
pub fn skip(msg: &[u8], mut pos: usize) -> Result<usize, WireError> {
    let start = pos;
    loop {
        let len = *msg.get(pos).ok_or(WireError::Truncated)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => {
                pos += 1 + len;
                if pos - start > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
            }
            0xC0 => {
                if pos + 2 > msg.len() {
                    return Err(WireError::Truncated);
                }
                return Ok(pos + 2);
            }
            _ => return Err(WireError::BadLabelType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_round_trip_lowercases() {
        let name = Name::from_dotted("Cluster.Local").unwrap();
        assert_eq!(name.as_wire(), b"\x07cluster\x05local\x00");
        assert_eq!(name.to_dotted(), "cluster.local.");
        assert_eq!(Name::from_dotted(".").unwrap(), Name::root());
        assert_eq!(Name::root().to_dotted(), ".");
    }

    /// Fuzzing regression (corefile target): a zone name with a control byte was written as
    /// `\001` and read back as four bytes, so a translated config did not read back.
    #[test]
    fn dotted_escapes_read_back_as_written() {
        let name = Name::from_dotted("a\\001b\\.c\\\\.d").unwrap();
        assert_eq!(name.as_wire(), b"\x06a\x01b.c\\\x01d\x00");
        assert_eq!(name.to_dotted(), "a\\001b\\046c\\092.d.");
        assert_eq!(Name::from_dotted(&name.to_dotted()).unwrap(), name);
        assert_eq!(Name::from_dotted("a\\256"), Err(WireError::BadEscape));
        assert_eq!(Name::from_dotted("a\\12"), Err(WireError::BadEscape));
        assert_eq!(Name::from_dotted("a\\"), Err(WireError::BadEscape));
        let long = "\\065".repeat(64);
        assert_eq!(Name::from_dotted(&long), Err(WireError::LabelTooLong));
    }

    #[test]
    fn dotted_rejects_bad_labels() {
        assert_eq!(Name::from_dotted("a..b"), Err(WireError::EmptyLabel));
        let long = "a".repeat(64);
        assert_eq!(Name::from_dotted(&long), Err(WireError::LabelTooLong));
        let many = vec!["abcdefghi"; 30].join(".");
        assert_eq!(Name::from_dotted(&many), Err(WireError::NameTooLong));
    }

    /// The case of every letter comes back, up to the last one of the longest name (in the
    /// bitmask's last byte), and only letters change: digits and label lengths stay as sent.
    #[test]
    fn letter_case_round_trips_on_the_longest_name() {
        let labels: Vec<String> = [b'Q', b'w', b'E', b'r']
            .iter()
            .enumerate()
            .map(|(at, &letter)| {
                let len = if at == 3 { 61 } else { 63 };
                let mut label = vec![b'7'; len];
                label[0] = letter;
                label[len - 1] = letter.to_ascii_uppercase();
                String::from_utf8(label).unwrap()
            })
            .collect();
        let sent = Name::from_dotted(&labels.join(".")).unwrap();
        let mut wire = Vec::new();
        for label in &labels {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        assert_eq!(wire.len(), MAX_NAME_LEN);
        let (as_sent, _) = read_uncompressed(&wire, 0).unwrap();
        let (lower, case) = as_sent.split_case();
        assert_eq!(lower, sent, "the lowercased name");
        assert_eq!(lower.with_case(&case).as_wire(), &wire[..]);
        assert_eq!(
            case.0[31],
            1 << 5,
            "byte 253, the last letter, was upper-case"
        );
        let (_, none) = lower.split_case();
        assert_eq!(none, LetterCase::LOWER);
    }

    #[test]
    fn subdomain_is_label_aligned() {
        let zone = Name::from_dotted("cluster.local").unwrap();
        assert!(
            Name::from_dotted("a.svc.cluster.local")
                .unwrap()
                .is_subdomain_of(&zone)
        );
        assert!(zone.is_subdomain_of(&zone));
        assert!(
            !Name::from_dotted("xcluster.local")
                .unwrap()
                .is_subdomain_of(&zone)
        );
        assert!(!Name::from_dotted("local").unwrap().is_subdomain_of(&zone));
        assert!(zone.is_subdomain_of(&Name::root()));
    }

    #[test]
    fn question_name_rejects_pointers_and_overlong_names() {
        assert_eq!(
            read_uncompressed(b"\xC0\x0C", 0).unwrap_err(),
            WireError::PointerInQuestion
        );
        assert_eq!(
            read_uncompressed(b"\x40abc", 0).unwrap_err(),
            WireError::BadLabelType
        );
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(
            read_uncompressed(&long, 0).unwrap_err(),
            WireError::NameTooLong
        );
        assert_eq!(
            read_uncompressed(b"\x03ab", 0).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn skip_stops_at_pointer_without_following_it() {
        // A pointer to itself would loop forever if it were followed.
        assert_eq!(skip(b"\x01a\xC0\x00", 0), Ok(4));
        assert_eq!(skip(b"\x01a\xC0", 0), Err(WireError::Truncated));
    }
}
