//! Where a running config comes from, so that a reload can read it again: the native YAML
//! file of `run --config`, or (in [`crate::nodecache`]) node-cache's Corefile template, the
//! kube-dns ConfigMap and the flags, rendered and translated anew. The reload watch in
//! `server` polls a source and applies what changed, whatever the source is.

use std::path::PathBuf;

use super::Config;

/// A config that can be read again.
pub trait ConfigSource: Send + Sync + 'static {
    /// What it is read from, for logs.
    fn describe(&self) -> String;

    /// What the config depends on, read now, compared with the last reading to see a change:
    /// `None` while it cannot be read for a moment (a file being replaced by hand).
    fn fingerprint(&self) -> Option<Vec<u8>>;

    /// The config, read and validated.
    fn load(&self) -> anyhow::Result<Config>;
}

/// A native YAML file; its bytes are its fingerprint (a ConfigMap volume swaps its `..data`
/// symlink atomically, so a read sees the old file or the new one, never half of each).
#[derive(Debug, Clone)]
pub struct ConfigFile(pub PathBuf);

impl ConfigSource for ConfigFile {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    fn fingerprint(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.0).ok()
    }

    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.0)?)
    }
}
