//! Label values as types: each label with a fixed set of values is an enum implementing
//! [`Label`] (its label name, each value's string, and the list of all values), declared with
//! [`label_enum!`] so the strings and the list cannot drift apart from the variants. A family
//! with such a label is held as [`PerValue`]: one series handle per value, looked up once when
//! its owner is built, so the query path indexes an array instead of hashing label strings, and
//! every value's series exists from the start (dashboards see zeros, not gaps, as node-cache's
//! do).
//!
//! The free-form labels (`server`, `zone`, `upstream`) are written by [`server`], [`zone`] and
//! [`upstream`] alone, so the series one module resolves are the ones another reads.
//!
//! The enums whose zeros are shown before their owner exists (node setup's `errortype`, the
//! tasks' `kind`, the reload `result`) live here, in the ground floor, because [`super::Metrics`]
//! seeds them and observe imports none of the modules above it; their owners re-export or map
//! to them. Enums that are only ever resolved by their owner stay with it (e.g.
//! [`super::upstream::CloseReason`]) and implement [`Label`] there.

use std::marker::PhantomData;
use std::net::SocketAddr;

use prometheus::core::{MetricVec, MetricVecBuilder};

use crate::wire::Name;

/// The `server` label of a listen address, as CoreDNS writes it: `dns://127.0.0.1:53`.
pub fn server(listen: SocketAddr) -> String {
    format!("dns://{listen}")
}

/// The `zone` label of a configured zone: its dotted name, `cluster.local.` or `.`.
pub fn zone(name: &Name) -> String {
    name.to_dotted()
}

/// The `upstream` (and CoreDNS's `to`) label of an upstream address: `10.0.0.10:53`.
pub fn upstream(addr: SocketAddr) -> String {
    addr.to_string()
}

/// A metric label whose values are a closed set.
pub trait Label: Copy + 'static {
    /// The label's name in the exposition, e.g. `reason`.
    const NAME: &'static str;
    /// Every value, in declaration order (so [`Label::index`] is the position in it).
    const ALL: &'static [Self];
    /// This value's string in the exposition.
    fn value(self) -> &'static str;
    /// The position of this value in [`Label::ALL`].
    fn index(self) -> usize;
}

/// Declares a fieldless enum and its [`Label`] implementation from one list of
/// `Variant => "value"` pairs: `label_enum! { pub enum Kind: "kind" { A => "a", B => "b" } }`.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $label:literal {
            $( $(#[$variant_meta:meta])* $variant:ident => $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $crate::observe::labels::Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn value(self) -> &'static str {
                match self {
                    $( $name::$variant => $value ),+
                }
            }

            fn index(self) -> usize {
                // Fieldless, without explicit discriminants: the declaration order, as `ALL`.
                self as usize
            }
        }
    };
}
pub(crate) use label_enum;

/// One series handle per value of the label `L`, resolved once.
pub struct PerValue<L, M> {
    series: Box<[M]>,
    label: PhantomData<fn() -> L>,
}

impl<L: Label, M> PerValue<L, M> {
    /// The series of `vec` for each value of `L`, after the fixed leading label values
    /// `leading` (e.g. the upstream's label); `L` is the family's last label.
    pub fn resolve<B>(vec: &MetricVec<B>, leading: &[&str]) -> PerValue<L, M>
    where
        B: MetricVecBuilder<M = M>,
    {
        let series = L::ALL
            .iter()
            .map(|value| {
                let mut values = leading.to_vec();
                values.push(value.value());
                vec.with_label_values(&values)
            })
            .collect();
        PerValue {
            series,
            label: PhantomData,
        }
    }

    /// The series of `value`.
    pub fn get(&self, value: L) -> &M {
        &self.series[value.index()]
    }
}

impl<L, M: Clone> Clone for PerValue<L, M> {
    fn clone(&self) -> Self {
        PerValue {
            series: self.series.clone(),
            label: PhantomData,
        }
    }
}

label_enum! {
    /// Why a node setup step failed: the `errortype` label of
    /// `coredns_nodecache_setup_errors_total`, with node-cache's values.
    pub enum SetupErrorType: "errortype" {
        Iptables => "iptables",
        IptablesLock => "iptables_lock",
        InterfaceAdd => "interface_add",
        InterfaceCheck => "interface_check",
        /// node-cache's label for a config it could not read; shown (as 0) for its dashboards,
        /// our reload failures count in `nodelocaldns_config_reloads_total` instead.
        Configmap => "configmap",
    }
}

label_enum! {
    /// What a background task does: the `kind` label of `nodelocaldns_tasks`.
    pub enum TaskKind: "kind" {
        /// A cache entry fetched again: a prefetch, or the refresh behind a stale answer.
        Refresh => "refresh",
        /// One pooled TCP connection to an upstream.
        Connection => "connection",
        /// The health probe of an upstream skipped after `max_fails`.
        Probe => "probe",
        /// The start-up forwarding-loop check.
        LoopCheck => "loop_check",
        /// The periodic check of a zone's hosts file (`zones[].hosts.reload`).
        HostsReload => "hosts_reload",
    }
}

label_enum! {
    /// How a config file change ended: the `result` label of
    /// `nodelocaldns_config_reloads_total`.
    pub enum ReloadResult: "result" {
        Success => "success",
        /// The new config was rejected; the previous one keeps serving.
        Failure => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts};

    #[test]
    fn each_value_gets_its_own_series_after_the_leading_labels() {
        let vec = IntCounterVec::new(Opts::new("t", "t"), &["upstream", ReloadResult::NAME])
            .expect("static names are valid");
        let per = PerValue::<ReloadResult, _>::resolve(&vec, &["u"]);
        per.get(ReloadResult::Failure).inc();
        assert_eq!(vec.with_label_values(&["u", "failure"]).get(), 1);
        assert_eq!(vec.with_label_values(&["u", "success"]).get(), 0);
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (position, kind) in TaskKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), position);
        }
    }
}
