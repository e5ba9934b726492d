//! The words of a Corefile: whitespace separates, `#` starts a comment, `"..."` quotes, and
//! `{$VAR}` is replaced by the environment variable, as CoreDNS's loader does.

use super::CorefileError;
use super::import::Source;

/// One word of a Corefile and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub line: usize,
    /// Quoted tokens are never braces.
    pub(super) quoted: bool,
}

impl Token {
    pub(super) fn is(&self, text: &str) -> bool {
        !self.quoted && self.text == text
    }
}

/// Splits Corefile text into words: whitespace separates, `#` starts a comment, `"..."`
/// quotes, and `{$VAR}` is replaced by the environment variable as CoreDNS does.
pub(super) fn tokenize(text: &str, source: &Source) -> Result<Vec<Token>, CorefileError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
        } else if c == '"' {
            let start = line;
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    None => {
                        return Err(source.invalid(start, "unterminated quoted string"));
                    }
                    Some('"') => break,
                    Some('\\') if chars.peek() == Some(&'"') => {
                        chars.next();
                        word.push('"');
                    }
                    Some(c) => {
                        if c == '\n' {
                            line += 1;
                        }
                        word.push(c);
                    }
                }
            }
            tokens.push(Token {
                text: expand_env(&word),
                line: start,
                quoted: true,
            });
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token {
                text: expand_env(&word),
                line,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

/// `{$NAME}` -> the variable's value (empty when unset), as CoreDNS's Corefile loader does.
fn expand_env(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("{$") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + len];
        out.push_str(&std::env::var(name).unwrap_or_default());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}
