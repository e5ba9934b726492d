//! CoreDNS's `import FILE|GLOB`: the matched files' text in place of the line, at the top level
//! (whole server blocks, `import /etc/coredns/custom/*.server`) or inside a block (directives,
//! `import custom/*.override`). A relative pattern is read from the importing file's directory;
//! files are taken in name order; a glob that matches nothing imports nothing (installers
//! mount an optional ConfigMap there, often empty), while a plain path that does not exist is
//! an error, as in CoreDNS. Imported files may import in turn, up to [`MAX_DEPTH`] deep.
//!
//! The splice is textual, before the words are read, and keeps a [`Source`] map from each line
//! of the result to the file and line it came from, so that every error and warning still
//! names the line the user wrote. Snippets (`(name) { ... }` and `import name`) are not
//! supported; a name that is neither a file nor a glob says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::CorefileError;

/// How deep imports may nest: deeper is taken for a cycle CoreDNS would also refuse.
pub const MAX_DEPTH: usize = 10;

/// Where each line of a (possibly spliced) Corefile text came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file the text was read from, named when a line is past the map.
    main: Arc<str>,
    /// For line `n` of the text (1-based), `origins[n - 1]`; empty for a text that is all
    /// `main`, line for line.
    origins: Vec<(Arc<str>, usize)>,
}

impl Source {
    /// A text that is exactly `file`, nothing imported.
    pub fn single(file: &str) -> Source {
        Source {
            main: file.into(),
            origins: Vec::new(),
        }
    }

    /// The file and line that line `line` of the text came from.
    pub fn locate(&self, line: usize) -> (&str, usize) {
        match line.checked_sub(1).and_then(|i| self.origins.get(i)) {
            Some((file, line)) => (file, *line),
            None => (&self.main, line),
        }
    }

    /// `FILE:LINE` of line `line` of the text.
    pub fn at(&self, line: usize) -> String {
        let (file, line) = self.locate(line);
        format!("{file}:{line}")
    }

    /// An error at line `line` of the text, named by where that line came from.
    pub fn invalid(&self, line: usize, message: impl Into<String>) -> CorefileError {
        let (file, line) = self.locate(line);
        CorefileError::Invalid {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// `text` (read from `file`, in directory `dir`) with every `import` line replaced by what it
/// imports, the map of where each line came from, and a warning per glob that matched nothing.
pub fn expand(
    text: &str,
    file: &str,
    dir: &Path,
) -> Result<(String, Source, Vec<String>), CorefileError> {
    let mut splice = Splice {
        text: String::new(),
        origins: Vec::new(),
        warnings: Vec::new(),
        imported_any: false,
    };
    splice.add(text, file.into(), dir, &mut Vec::new())?;
    let source = Source {
        main: file.into(),
        // Nothing imported: every line is its own, and errors read as before.
        origins: if splice.imported_any {
            splice.origins
        } else {
            Vec::new()
        },
    };
    Ok((splice.text, source, splice.warnings))
}

/// The text being built.
struct Splice {
    text: String,
    origins: Vec<(Arc<str>, usize)>,
    warnings: Vec<String>,
    imported_any: bool,
}

impl Splice {
    /// Appends `text` of `file`, expanding its imports; `chain` is the files being imported,
    /// outermost first.
    fn add(
        &mut self,
        text: &str,
        file: Arc<str>,
        dir: &Path,
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), CorefileError> {
        let here = |line: usize, message: String| CorefileError::Invalid {
            file: file.to_string(),
            line,
            message,
        };
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let words: Vec<&str> = line
                .split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if words.first() != Some(&"import") {
                self.text.push_str(line);
                self.text.push('\n');
                self.origins.push((file.clone(), number));
                continue;
            }
            let [_, pattern] = words[..] else {
                return Err(here(number, "import takes one file or glob".into()));
            };
            if chain.len() >= MAX_DEPTH {
                return Err(here(
                    number,
                    format!("imports nest deeper than {MAX_DEPTH}: an import cycle?"),
                ));
            }
            self.imported_any = true;
            let path = dir.join(pattern);
            let imported_files = matches(&path, pattern).map_err(|m| here(number, m))?;
            if imported_files.is_empty() {
                // Only a glob matches nothing without an error (`matches`).
                self.warnings.push(format!(
                    "{file}:{number}: import {pattern}: no file matches (nothing imported)"
                ));
            }
            for imported in imported_files {
                if chain.contains(&imported) {
                    return Err(here(
                        number,
                        format!("{} imports itself", imported.display()),
                    ));
                }
                let name: Arc<str> = imported.display().to_string().into();
                let text = std::fs::read_to_string(&imported).map_err(|error| {
                    here(number, format!("import {}: cannot read: {error}", name))
                })?;
                let parent = imported.parent().unwrap_or(dir).to_path_buf();
                chain.push(imported);
                self.add(&text, name, &parent, chain)?;
                chain.pop();
            }
        }
        Ok(())
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files `path` names: the matches of a glob in name order, or the one file.
fn matches(path: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !is_glob(pattern) {
        if path.is_file() {
            return Ok(vec![path.to_path_buf()]);
        }
        return Err(format!(
            "import {pattern}: no such file ({}); snippets are not supported: write the block \
             out or import a file",
            path.display()
        ));
    }
    let paths = glob::glob(&path.to_string_lossy())
        .map_err(|err| format!("import {pattern}: invalid glob: {err}"))?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_back_to_the_file_they_came_from() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("custom")).expect("dir");
        std::fs::write(dir.path().join("custom/b.override"), "log\n").expect("write");
        std::fs::write(dir.path().join("custom/a.override"), "# a\nerrors\n").expect("write");
        let text = ".:53 {\n    import custom/*.override\n    forward . 1.1.1.1\n}\nimport none/*.server\n";
        let (expanded, source, warnings) = expand(text, "Corefile", dir.path()).expect("expands");
        assert_eq!(
            expanded,
            ".:53 {\n# a\nerrors\nlog\n    forward . 1.1.1.1\n}\n"
        );
        let a = dir.path().join("custom/a.override").display().to_string();
        let b = dir.path().join("custom/b.override").display().to_string();
        assert_eq!(source.locate(1), ("Corefile", 1));
        assert_eq!(source.locate(3), (a.as_str(), 2));
        assert_eq!(source.locate(4), (b.as_str(), 1));
        assert_eq!(source.locate(5), ("Corefile", 3));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("Corefile:5: import none/*.server: no file matches"));
    }

    #[test]
    fn a_missing_file_a_cycle_and_a_bad_line_are_errors_at_their_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let err = |text: &str| {
            expand(text, "Corefile", dir.path())
                .expect_err("refused")
                .to_string()
        };
        assert!(
            err("\nimport missing.conf\n")
                .starts_with("Corefile:2: import missing.conf: no such file")
        );
        assert_eq!(
            err("import a b\n"),
            "Corefile:1: import takes one file or glob"
        );
        std::fs::write(dir.path().join("self.conf"), "import self.conf\n").expect("write");
        let cycle = err("import self.conf\n");
        assert!(
            cycle.contains("self.conf:1:") && cycle.contains("imports itself"),
            "{cycle}"
        );
    }
}
