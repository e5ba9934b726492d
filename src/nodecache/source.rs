//! node-cache's inputs as a [`ConfigSource`], so that a running instance applies a changed
//! Corefile or kube-dns ConfigMap without a restart. node-cache polls the kube-dns ConfigMap
//! directory and the template's directory, re-renders the Corefile, and CoreDNS's `reload`
//! plugin picks the file up 30-45 s later; we read the same inputs, render and translate them
//! at every poll, and reload when the resulting config changes. Comparing the translation,
//! not the files, covers every input at once (the template or `-conf`, the ConfigMap's keys,
//! the upstream Service's variable, the resolv.conf the upstreams name) and nothing else: a
//! file rewritten with the same content changes nothing.

use super::args::NodeCacheArgs;
use crate::config::Config;
use crate::config::source::ConfigSource;

/// node-cache's flags, read again at every poll.
#[derive(Debug, Clone)]
pub struct NodeCacheSource(pub NodeCacheArgs);

impl ConfigSource for NodeCacheSource {
    fn describe(&self) -> String {
        format!(
            "{} (node-cache's Corefile and kube-dns ConfigMap)",
            self.0.base_corefile.display()
        )
    }

    /// The translation as YAML, or the error that stops it: a broken input is reported once,
    /// not at every poll.
    fn fingerprint(&self) -> Option<Vec<u8>> {
        let read = match self.0.to_config(false) {
            Ok(node_cache) => node_cache.translation.config.to_yaml(),
            Err(err) => format!("error: {err}"),
        };
        Some(read.into_bytes())
    }

    fn load(&self) -> anyhow::Result<Config> {
        let node_cache = self.0.to_config(true)?;
        for warning in &node_cache.translation.warnings {
            tracing::warn!("{warning}");
        }
        Ok(node_cache.translation.config)
    }
}
