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
//! them, as the table below says ([`args`] has the flags'). Metrics: none of its own.
//!
//! | directive | translation |
//! |---|---|
//! | `ZONE[:PORT] [ZONE...] {` | one native zone per name; listen on every `bind` IP at each zone's PORT (default `-dns.port`, 53); without `bind`, on `0.0.0.0` (IPv4 only, where CoreDNS takes both families: an IPv6 cluster binds its address) |
//! | `bind IP...` | `listen` (the union over blocks: every zone is answered on every listen address) |
//! | `forward FROM TO... { ... }` | `zones[].upstreams`; FROM must be `.` or the block's zone; TO is `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://...` or a resolv.conf path; `tls://IP[%NAME][:PORT]` (all TOs alike) makes `transport: tls`, port 853 by default, `%NAME` the `tls.server_name`; a TO this server binds is accepted with a warning (IPVS may take it elsewhere; the start-up loop probe checks), on loopback it is a loop |
//! | `  force_tcp` / `prefer_udp` | `transport: tcp` / `prefer_udp` (else `udp`) |
//! | `  policy random\|round_robin\|sequential` | `policy` |
//! | `  health_check D`, `max_fails N` | `health_check`, `max_fails` (CoreDNS defaults 500ms and 2) |
//! | `  max_concurrent N` | `server.max_inflight` (smallest over blocks; over the limit we answer SERVFAIL where CoreDNS answers REFUSED) |
//! | `  expire D` | `pool.idle_timeout` (closed exactly then, where CoreDNS sweeps every D) |
//! | `  tls_servername NAME` | `tls.server_name` (not with `%NAME`, as CoreDNS) |
//! | `  tls [CA]`, `tls CERT KEY [CA]` | `tls.ca_file`, `tls.cert_file`, `tls.key_file` (no CA: the system's roots); ignored, with a warning, without `tls://` upstreams |
//! | `cache [TTL]` | `cache.success_ttl` = `cache.denial_ttl` = TTL (CoreDNS: 3600s / 1800s without TTL) |
//! | `cache { success N [TTL [MINTTL]]; denial N [TTL [MINTTL]]; prefetch N [D] [P%]; serve_stale [D [MODE]]; servfail D }` | `success_ttl`, `denial_ttl`, `min_ttl`, `prefetch`, `serve_stale.max_age` (and `client_timeout`: `0s` for CoreDNS's `immediate`, its default; the query's 5 s deadline for `verify`), `servfail_ttl`; capacities add up into `cache.capacity` |
//! | no `cache` | `zones[].cache.enabled: false` |
//! | `hosts [FILE [ZONES...]] { INLINE...; ttl S; reload D; no_reverse; fallthrough [ZONES...]; fallthrough_unsupported }` | `zones[].hosts`: `file` (default `/etc/hosts`), `entries` (the lines before `fallthrough`), `zones` (ZONES, else the block's zones), `ttl`, `reload`, `no_reverse`, `fallthrough`, `fallthrough_unsupported`; one section shared by the block's zones |
//! | `health [ADDR]` | `metrics.health_listen` (`/health` and `/ready` there; `:PORT` is `[::]:PORT`, which serves both families as Go's `:PORT` does) |
//! | `prometheus [ADDR]` | `metrics.listen` (`:PORT` as for `health`); without it `metrics.enabled: false`, as CoreDNS serves no metrics then |
//! | `log` | `zones[].log: true` for the block's zones: every answer of theirs logged, target `query` (our line format; CoreDNS's format arguments are not read) |
//! | `template CLASS TYPE [ZONES...] { match REGEX...; answer RR...; authority RR...; additional RR...; rcode CODE; fallthrough [ZONES...] }` | one entry of `zones[].templates` per directive, in order: `class`, `type`, `zones` (ZONES, else the block's zones), `match`, `answer`, `authority`, `additional`, `rcode`, `fallthrough`; checked at its line. `upstream` is ignored, as in CoreDNS; `ederror`, `var` and `expr` are refused |
//! | `loop` | `server.loop_check: true` (the default: a start-up probe per zone) |
//! | `errors` | implied: errors are always logged |
//! | `reload [INTERVAL [JITTER]]` | always on, with or without the directive: the template (or `-conf`), the kube-dns ConfigMap and the Service variable are read, rendered and translated every 2 s, and a changed translation is applied without dropping a query ([`source`](mod@source)); a broken one is logged and counted (`nodelocaldns_config_reloads_total{result="failure"}`) while the running one keeps serving |
//! | `import FILE\|GLOB` | the files' text in place of the line, at the top level or in a block, relative to the Corefile's directory ([`import`]); a glob with no match imports nothing (a warning), a missing plain file is an error; snippets are refused |
//! | anything else | an error naming file and line |
//!
//! An error the native validation finds in a translated zone names the line of the server
//! block that made the zone (`Corefile:3: zones[0].upstreams (translated): ...`); one in a part
//! no block made names the field only.
//!
//! Where CoreDNS and our defaults differ, the translation keeps CoreDNS's numbers (2 s per
//! upstream, 5 s per query, SERVFAIL cached 5 s, minimum TTL 5 s) except that prefetch and
//! serve-stale stay on with our defaults unless the Corefile sets them: that is what users
//! asked node-cache for (kubernetes/dns #652), and it only ever answers where CoreDNS fails.

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
        field: String,
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
