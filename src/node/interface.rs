//! The link that holds the local IPs, through netlink (rtnetlink).
//!
//! Like node-cache (`pkg/netif`): a link of kind dummy named `nodelocaldns`, created if absent,
//! never set UP (IPv4 local delivery works through the local route the kernel adds with each
//! address), each IP as /32 or /128. Unlike node-cache, a link that already exists is used as it
//! is and never deleted by us, which is also the fallback when the kernel has no dummy driver:
//! `interface_name: lo` (or any existing link) puts the local IPs there.

use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::{Handle, LinkDummy};
use thiserror::Error;

const EPERM: i32 = 1;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;
const EADDRNOTAVAIL: i32 = 99;

/// What went wrong with the link, each with what to do about it.
#[derive(Debug, Error)]
pub enum InterfaceError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(io::Error),
    #[error(
        "{action} {name}: operation not permitted: managing links needs CAP_NET_ADMIN (add \
         NET_ADMIN to the container's securityContext.capabilities, or run as root), or set \
         node.setup_interface: false (-setupinterface=false) and put the IPs on the node yourself"
    )]
    NotPermitted { action: &'static str, name: String },
    #[error(
        "cannot create {name}: this kernel has no dummy link type (modprobe dummy, or build \
         with CONFIG_DUMMY); or use an existing link instead: set node.interface_name \
         (-interfacename) to it, e.g. lo, and the local IPs are added there"
    )]
    NoDummy { name: String },
    #[error("{action} {name}: {error}")]
    Netlink {
        action: &'static str,
        name: String,
        error: rtnetlink::Error,
    },
}

/// A link found by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub is_dummy: bool,
}

/// A netlink connection; its background task ends when this is dropped.
pub struct Links {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// The prefix of a single local address.
fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

impl Links {
    /// Opens a netlink connection (needs a tokio runtime).
    pub fn connect() -> Result<Links, InterfaceError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(InterfaceError::Connect)?;
        let task = tokio::spawn(connection);
        Ok(Links { handle, task })
    }

    fn fail(&self, action: &'static str, name: &str, error: rtnetlink::Error) -> InterfaceError {
        match errno(&error) {
            Some(EPERM) => InterfaceError::NotPermitted {
                action,
                name: name.to_string(),
            },
            _ => InterfaceError::Netlink {
                action,
                name: name.to_string(),
                error,
            },
        }
    }

    /// The link called `name`, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Link>, InterfaceError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => {
                let is_dummy = msg.attributes.iter().any(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy))),
                    _ => false,
                });
                Ok(Some(Link {
                    index: msg.header.index,
                    is_dummy,
                }))
            }
            Ok(None) => Ok(None),
            Err(error) if errno(&error) == Some(ENODEV) => Ok(None),
            Err(error) => Err(self.fail("look up link", name, error)),
        }
    }

    /// Creates a dummy link (left down, as node-cache leaves it).
    pub async fn create_dummy(&self, name: &str) -> Result<Link, InterfaceError> {
        let result = self
            .handle
            .link()
            .add(LinkDummy::new(name).build())
            .execute()
            .await;
        match result {
            Ok(()) => {}
            Err(error) if errno(&error) == Some(EOPNOTSUPP) => {
                return Err(InterfaceError::NoDummy {
                    name: name.to_string(),
                });
            }
            // Created meanwhile by someone else (a second instance): use it.
            Err(error) if errno(&error) == Some(EEXIST) => {}
            Err(error) => return Err(self.fail("create dummy link", name, error)),
        }
        self.find(name)
            .await?
            .ok_or_else(|| InterfaceError::Netlink {
                action: "create dummy link",
                name: name.to_string(),
                error: rtnetlink::Error::RequestFailed,
            })
    }

    /// The addresses on a link.
    pub async fn addresses(&self, link: Link, name: &str) -> Result<Vec<IpAddr>, InterfaceError> {
        let messages = self.address_messages(link, name).await?;
        Ok(messages.iter().filter_map(address_of).collect())
    }

    /// The kernel's records of the addresses on a link, as RTM_DELADDR wants them back.
    async fn address_messages(
        &self,
        link: Link,
        name: &str,
    ) -> Result<Vec<AddressMessage>, InterfaceError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list addresses of", name, e))
    }

    /// Adds `ip` as a host address. Returns false when it was there already.
    pub async fn add_address(
        &self,
        link: Link,
        name: &str,
        ip: IpAddr,
    ) -> Result<bool, InterfaceError> {
        let mut request = self.handle.address().add(link.index, ip, host_prefix(ip));
        // No duplicate address detection: the address is this node's alone, and until DAD
        // ends (never, on a link without carrier; about a second on one with) the kernel
        // keeps an IPv6 address tentative and refuses to bind it, so the listener would fail
        // with "Cannot assign requested address". Even on a dummy link, where DAD is skipped,
        // the skip runs later on a kernel work queue that waits for the RTNL lock, so anything
        // else changing links on the node delays it (with namespaces created and deleted
        // meanwhile, 10 of 300 binds right after an add failed). The flag makes the address
        // usable at the ack (0 of 300).
        if ip.is_ipv6() {
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(error) if errno(&error) == Some(EEXIST) => Ok(false),
            Err(error) => Err(self.fail("add address to", name, error)),
        }
    }

    /// Removes `ip` from the link. Returns false when it was not there.
    pub async fn remove_address(
        &self,
        link: Link,
        name: &str,
        ip: IpAddr,
    ) -> Result<bool, InterfaceError> {
        let messages = self.address_messages(link, name).await?;
        let mut removed = false;
        for msg in messages.into_iter().filter(|m| address_of(m) == Some(ip)) {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => removed = true,
                Err(error) if errno(&error) == Some(EADDRNOTAVAIL) => {}
                Err(error) => return Err(self.fail("remove address from", name, error)),
            }
        }
        Ok(removed)
    }

    /// Deletes the link.
    pub async fn delete(&self, link: Link, name: &str) -> Result<(), InterfaceError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            Err(error) if errno(&error) == Some(ENODEV) => Ok(()),
            Err(error) => Err(self.fail("delete link", name, error)),
        }
    }
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the address itself on point-to-point links; IFA_ADDRESS otherwise.
    msg.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}
