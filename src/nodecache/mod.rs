//! node-cache compatibility: what NodeLocal DNSCache (`node-cache`) is started with, turned
//! into one native [`Config`](crate::config::Config). A cluster switches to us by changing the
//! image of its `node-local-dns` DaemonSet, so we read what node-cache reads, in five stages,
//! one file each:
//!
//! - [`args`]: node-cache's command line (`-localip`, `-basecorefile`, `-upstreamsvc`, ...);
//! - [`render`](mod@render): its Corefile template, filled as node-cache's `updateCorefile`
//!   does from the `kube-dns` ConfigMap directory (`stubDomains`, `upstreamNameservers`) and
//!   the `$<SVC>_SERVICE_HOST` variable of the upstream Service;
//! - [`import`]: the files its `import` lines name, spliced in, with a map back to each line's
//!   file;
//! - [`lex`] and [`parse`](mod@parse): the rendered Corefile's words, then its server blocks;
//! - [`translate`](mod@translate): the blocks' directives into zones of one native config.
//!
//! It stands on [`crate::config`] (the model it produces) and [`crate::wire`] (zone names),
//! and nothing but the command line (`main.rs`) imports it. Config keys: none read; it writes
//! them, as `docs/corefile.md` says ([`args`] has the flags'). Metrics: none of its own.
//!
//! The directives, their options and how each is taken are listed once, in
//! `docs/corefile.md`; `tests/corefile.rs` runs the corpus of field Corefiles in
//! `tests/data/corefiles/` through this module.

pub mod args;
pub mod import;
pub mod lex;
pub mod parse;
pub mod render;
pub mod source;
pub mod target;
pub mod translate;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use args::{NodeCacheArgs, NodeCacheConfig, NodeCacheError, is_node_cache_command_line};
pub use lex::Token;
pub use parse::{Directive, ServerBlock, parse};
pub use render::{DEFAULT_RESOLV_CONF, KubeDnsConfig, RenderParams, render, service_host_env};
pub use source::NodeCacheSource;
pub use target::{ForwardTarget, parse_forward_target};
pub use translate::{TranslateOptions, Translation, translate};

/// A Corefile (or its inputs) that cannot be used: where and why.
#[derive(Debug, Error)]
pub enum CorefileError {
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    /// An error that is not tied to one line (a missing variable, a bad kube-dns ConfigMap).
    #[error("{0}")]
    Input(String),
    /// The translation is not a valid native config, in a part no one Corefile line made
    /// (a zone's part is [`CorefileError::Invalid`] at the zone's line).
    #[error("{file}: {field} (translated): {message}")]
    Native {
        file: String,
        field: crate::config::FieldPath,
        message: String,
    },
}

/// Reads, parses and translates a Corefile file.
pub fn load(path: &Path, options: &TranslateOptions) -> Result<Translation, CorefileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| CorefileError::Read {
        file: file.clone(),
        error,
    })?;
    let options = TranslateOptions {
        import_dir: path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ..options.clone()
    };
    translate(&text, &file, &options)
}
