//! A Corefile's words into server blocks: `ZONE[:PORT]... {`, then one directive per line with
//! its arguments and an optional `{ }` block of option lines. Snippets and nested blocks are
//! refused with the file and line; `import` lines were spliced in before (`import`).

use super::CorefileError;
use super::import::Source;
use super::lex::{Token, tokenize};

/// `import` is read where it is a line of its own (see `import`); anywhere else it is refused.
pub(super) const IMPORT_ALONE: &str = "`import` must be on a line of its own";

/// A directive: its name, the words after it on its line, and the lines of its `{ }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: Token,
    pub args: Vec<Token>,
    pub block: Vec<Vec<Token>>,
}

/// `ZONE[:PORT]... { directives }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlock {
    pub keys: Vec<Token>,
    pub directives: Vec<Directive>,
}

/// Parses Corefile text into server blocks; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<ServerBlock>, CorefileError> {
    parse_source(text, &Source::single(file))
}

/// Parses Corefile text whose lines come from `source` (imports spliced in).
pub fn parse_source(text: &str, source: &Source) -> Result<Vec<ServerBlock>, CorefileError> {
    let tokens = tokenize(text, source)?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        source,
    };
    let mut blocks = Vec::new();
    while parser.at < tokens.len() {
        blocks.push(parser.server_block()?);
    }
    Ok(blocks)
}

/// The tokens and how far they are read.
struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    source: &'a Source,
}

impl<'a> Parser<'a> {
    fn err(&self, line: usize, message: String) -> CorefileError {
        self.source.invalid(line, message)
    }

    /// The next unread token (borrowed from the tokens, not from the parser).
    fn next(&self) -> Option<&'a Token> {
        self.tokens.get(self.at)
    }

    /// One `KEYS { directives }` block.
    fn server_block(&mut self) -> Result<ServerBlock, CorefileError> {
        let keys = self.keys()?;
        let Some(open) = self.next() else {
            let line = keys.first().map_or(1, |k| k.line);
            return Err(self.err(
                line,
                "server block without `{`: write `ZONE:PORT { ... }` around its directives".into(),
            ));
        };
        if keys.is_empty() {
            return Err(self.err(open.line, "`{` without a zone before it".into()));
        }
        let open_line = open.line;
        self.at += 1;
        let mut directives = Vec::new();
        loop {
            let Some(token) = self.next() else {
                return Err(self.err(open_line, "server block is not closed with `}`".into()));
            };
            if token.is("}") {
                self.at += 1;
                break;
            }
            if token.is("{") {
                return Err(self.err(token.line, "unexpected `{`".into()));
            }
            directives.push(self.directive()?);
        }
        Ok(ServerBlock { keys, directives })
    }

    /// The zone keys before a block's `{`; `a.local, b.local` is allowed like CoreDNS.
    fn keys(&mut self) -> Result<Vec<Token>, CorefileError> {
        let mut keys = Vec::new();
        while let Some(token) = self.next()
            && !token.is("{")
        {
            if token.is("}") {
                return Err(self.err(token.line, "unexpected `}`".into()));
            }
            if token.text.starts_with('(') {
                return Err(self.err(
                    token.line,
                    format!(
                        "`{}`: snippets are not supported; write the blocks out or import a file",
                        token.text
                    ),
                ));
            }
            if token.text == "import" {
                return Err(self.err(token.line, IMPORT_ALONE.into()));
            }
            for part in token.text.split(',').filter(|p| !p.is_empty()) {
                keys.push(Token {
                    text: part.to_string(),
                    ..token.clone()
                });
            }
            self.at += 1;
        }
        Ok(keys)
    }

    /// A directive's name, the arguments on its line, and its block if one opens there.
    fn directive(&mut self) -> Result<Directive, CorefileError> {
        let name = self.tokens[self.at].clone();
        self.at += 1;
        let mut args = Vec::new();
        while let Some(t) = self.next() {
            if t.line != name.line || t.is("{") || t.is("}") {
                break;
            }
            args.push(t.clone());
            self.at += 1;
        }
        let mut block = Vec::new();
        if let Some(t) = self.next()
            && t.is("{")
            && t.line == name.line
        {
            self.at += 1;
            block = self.directive_block(&name)?;
        }
        Ok(Directive { name, args, block })
    }

    /// The option lines of `name`'s block, after its `{`, up to and with its `}`.
    fn directive_block(&mut self, name: &Token) -> Result<Vec<Vec<Token>>, CorefileError> {
        let mut block = Vec::new();
        let mut current: Vec<Token> = Vec::new();
        loop {
            let Some(t) = self.next() else {
                return Err(self.err(
                    name.line,
                    format!("the block of `{}` is not closed with `}}`", name.text),
                ));
            };
            self.at += 1;
            if t.is("}") {
                break;
            }
            if t.is("{") {
                return Err(self.err(t.line, "nested blocks are not supported".into()));
            }
            if current.first().is_some_and(|first| first.line != t.line) {
                block.push(std::mem::take(&mut current));
            }
            current.push(t.clone());
        }
        if !current.is_empty() {
            block.push(current);
        }
        Ok(block)
    }
}
