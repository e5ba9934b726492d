//! Real stub resolvers end to end, as pods run them (docs/design.md, failures 2, 3 and 5): glibc's
//! getaddrinfo (plain, `single-request-reopen`, `use-vc`), musl's, and Go's pure resolver,
//! each in a "pod" network namespace whose `/etc/resolv.conf` is a pod's
//! (`search NS.svc.cluster.local svc.cluster.local cluster.local`, `options ndots:5`), asking
//! our forwarder on 169.254.20.10, with autopath on and off.
//!
//! The forwarder, its authoritative upstreams and (with autopath) the fake API server it
//! watches pods through run in this process, on a thread that entered a "node" namespace; a
//! veth pair joins each pod namespace to it, and each pod's address is the pod IP the API
//! server reports, so autopath sees the resolver's packets come from that pod. The resolver
//! programs are `tests/stubs/lookup.c` (built with cc for glibc and with musl-gcc for musl)
//! and `tests/stubs/lookup.go` (pure Go), compiled at run time.
//!
//! Every lookup's wall time is printed (`--nocapture` shows them), and each test ends with a
//! summary per resolver on standard error, which a plain `cargo test` shows; a lookup as slow
//! as the resolver's first retry (it got no answer to a query) fails the test. Needs root:
//! without it each test says so and passes vacuously; a resolver whose compiler is missing is
//! skipped, saying so (`scripts/test.sh` installs musl-tools and golang-go).

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::fake_apiserver::{FakeApiServer, FakePod};
use common::netns::{Netns, is_root};
use common::{Authority, EXAMPLE_COM, Forwarder, Programmable, a_with, aaaa, name, soa, zone};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use nodelocal_dns::kube::PodWatch;

const LOCAL_IP: &str = "169.254.20.10";
const NODE: &str = "node-a";
/// The Kubernetes namespace of every resolver's pod.
const POD_NAMESPACE: &str = "shop";

/// The pods' cluster: a service of the pods' own namespace (and one of the same name in `argo`,
/// the namespace of the Completed pods), and one of another namespace.
const CLUSTER_RECORDS: &str = "cart.shop.svc IN A 192.0.2.101\n\
                               cart.argo.svc IN A 192.0.2.201\n\
                               db.team-b.svc IN A 192.0.2.102\n";

/// The field case: the name is a CNAME to a target that has an A record and no AAAA, so the
/// AAAA answer is NOERROR with only the CNAME.
const EXAMPLE_NET_RECORDS: &str = "api IN CNAME edge\nedge IN A 192.0.2.90\n";

/// The name under `example.org` whose A and AAAA TTLs trade places every second upstream.
const FLIP: &str = "flip.example.org.";

/// One stub resolver as a pod runs it: a program, its environment and its resolv.conf options.
struct Resolver {
    label: &'static str,
    program: PathBuf,
    env: Vec<(&'static str, &'static str)>,
    /// Appended to the pod's `options ndots:5` line.
    options: &'static str,
    /// When the resolver first sends a query again that got no answer (its `timeout:5` by
    /// default; musl retries after timeout/attempts = 2.5 s): a lookup this slow lost a query.
    retries_after: Duration,
}

/// The compiled stub programs; `None` where the compiler is missing (said once).
struct Stubs {
    glibc: Option<PathBuf>,
    musl: Option<PathBuf>,
    go: Option<PathBuf>,
}

fn stubs() -> &'static Stubs {
    static STUBS: OnceLock<Stubs> = OnceLock::new();
    STUBS.get_or_init(|| {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stubs");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stubs");
        std::fs::create_dir_all(&out).expect("create the stubs' build directory");
        let c = sources.join("lookup.c");
        let c = c.to_str().expect("a UTF-8 path");
        let build = |what: &str, compiler: &str, args: &[&str], target: PathBuf| {
            if Command::new(compiler).arg("--version").output().is_err() {
                eprintln!("skipped: {what}: `{compiler}` is not installed");
                return None;
            }
            let mut command = Command::new(compiler);
            command.args(args).arg("-o").arg(&target);
            if compiler == "go" {
                // Offline and self-contained: a standard-library program, no module lookups,
                // caches in the build directory rather than $HOME.
                command
                    .arg(sources.join("lookup.go"))
                    .env("CGO_ENABLED", "0")
                    .env("GOPROXY", "off")
                    .env("GOFLAGS", "")
                    .env("GOCACHE", out.join("gocache"))
                    .env("GOPATH", out.join("gopath"))
                    .env("HOME", &out);
            } else {
                command.arg(c);
            }
            let built = command.output().expect("the compiler runs");
            assert!(
                built.status.success(),
                "{what}: {command:?}: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            Some(target)
        };
        Stubs {
            glibc: build("glibc", "cc", &["-O1", "-Wall"], out.join("lookup-glibc")),
            musl: build(
                "musl",
                "musl-gcc",
                &["-O1", "-Wall", "-static"],
                out.join("lookup-musl"),
            ),
            go: build("Go's resolver", "go", &["build"], out.join("lookup-go")),
        }
    })
}

/// Every resolver this machine can build, each in a pod of its own.
fn resolvers() -> Vec<Resolver> {
    let stubs = stubs();
    let five = Duration::from_secs(5);
    let mut resolvers = Vec::new();
    if let Some(glibc) = &stubs.glibc {
        for (label, options) in [
            ("glibc", ""),
            ("glibc single-request-reopen", " single-request-reopen"),
            ("glibc use-vc", " use-vc"),
        ] {
            resolvers.push(Resolver {
                label,
                program: glibc.clone(),
                env: vec![],
                options,
                retries_after: five,
            });
        }
    }
    if let Some(musl) = &stubs.musl {
        resolvers.push(Resolver {
            label: "musl",
            program: musl.clone(),
            env: vec![],
            options: "",
            retries_after: Duration::from_millis(2500),
        });
    }
    if let Some(go) = &stubs.go {
        resolvers.push(Resolver {
            label: "go",
            program: go.clone(),
            env: vec![("GODEBUG", "netdns=go")],
            options: "",
            retries_after: five,
        });
    }
    resolvers
}

/// A resolver in its pod: the pod's network namespace and IP.
struct Pod {
    resolver: Resolver,
    netns: Netns,
    ip: String,
    /// Every lookup made in the lab, for its summary.
    log: Arc<Mutex<Vec<Lookup>>>,
}

/// One lookup's outcome, as the stub printed it.
#[derive(Debug, Clone)]
struct Lookup {
    resolver: &'static str,
    name: String,
    ok: bool,
    took: Duration,
    /// The addresses found, or the resolver's error.
    detail: String,
}

impl Lookup {
    fn addresses(&self) -> Vec<IpAddr> {
        if !self.ok {
            return vec![];
        }
        let mut addresses: Vec<IpAddr> = self
            .detail
            .split(',')
            .filter_map(|a| a.parse().ok())
            .collect();
        addresses.sort();
        addresses
    }
}

impl Pod {
    /// The command that looks `names` up in this pod, one after another.
    fn command(&self, names: &[&str], interval: Option<Duration>) -> Command {
        let mut command = self
            .netns
            .command(&[self.resolver.program.to_str().expect("UTF-8")]);
        command.args(names).envs(self.resolver.env.iter().copied());
        if let Some(interval) = interval {
            command.env("LOOKUP_INTERVAL_MS", interval.as_millis().to_string());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// Reads what a finished lookup command printed; prints each lookup's wall time and fails
    /// the test on one as slow as a retry.
    fn outcome(&self, output: std::process::Output) -> Vec<Lookup> {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {} {text}{}",
            self.resolver.label,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let lookups: Vec<Lookup> = text
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(4, '\t').collect();
                let [name, result, ms, detail] = fields[..] else {
                    panic!("{}: unreadable line {line:?}", self.resolver.label);
                };
                let ms: f64 = ms.parse().expect("milliseconds");
                Lookup {
                    resolver: self.resolver.label,
                    name: name.to_string(),
                    ok: result == "ok",
                    took: Duration::from_secs_f64(ms / 1000.0),
                    detail: detail.to_string(),
                }
            })
            .collect();
        self.log
            .lock()
            .expect("not poisoned")
            .extend(lookups.iter().cloned());
        for lookup in &lookups {
            println!(
                "{:<28} {:<20} {:>9.1} ms  {} {}",
                lookup.resolver,
                lookup.name,
                lookup.took.as_secs_f64() * 1000.0,
                if lookup.ok { "ok" } else { "FAILED" },
                lookup.detail
            );
            assert!(
                lookup.took < self.resolver.retries_after,
                "{} looking up {} took {:?}, as long as its retry after an unanswered query",
                lookup.resolver,
                lookup.name,
                lookup.took
            );
        }
        lookups
    }

    /// Looks up one name and returns its outcome.
    fn lookup(&self, name: &str) -> Lookup {
        let output = self
            .command(&[name], None)
            .output()
            .expect("ip netns exec runs");
        let mut lookups = self.outcome(output);
        assert_eq!(lookups.len(), 1, "{}: one lookup", self.resolver.label);
        lookups.remove(0)
    }
}

/// The node namespace and one pod per resolver, joined by veth pairs.
struct Lab {
    test: String,
    node: Netns,
    pods: Vec<Pod>,
    log: Arc<Mutex<Vec<Lookup>>>,
}

/// The lab's lookup times, per resolver, written straight to the test's standard error (not
/// captured, so a plain `cargo test` shows them too): count, median and slowest.
impl Drop for Lab {
    fn drop(&mut self) {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let mut summary = String::new();
        for pod in &self.pods {
            let mut took: Vec<Duration> = log
                .iter()
                .filter(|l| l.resolver == pod.resolver.label)
                .map(|l| l.took)
                .collect();
            if took.is_empty() {
                continue;
            }
            took.sort();
            summary.push_str(&format!(
                "  {}: {} lookups, median {:.1} ms, slowest {:.1} ms\n",
                pod.resolver.label,
                took.len(),
                took[took.len() / 2].as_secs_f64() * 1000.0,
                took[took.len() - 1].as_secs_f64() * 1000.0
            ));
        }
        let _ = write!(
            std::io::stderr().lock(),
            "{}: wall time per lookup\n{summary}",
            self.test
        );
    }
}

impl Lab {
    /// `None` (with a message) when not root.
    fn new(tag: &str) -> Option<Lab> {
        if !is_root() {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let node = Netns::new(&format!("{tag}-node"))?;
        // On the node's loopback, as the node cache's dummy link would hold it: answered on
        // every veth.
        node.ok(&["ip", "addr", "add", &format!("{LOCAL_IP}/32"), "dev", "lo"]);
        let mut pods = Vec::new();
        let log: Arc<Mutex<Vec<Lookup>>> = Arc::default();
        for (i, resolver) in resolvers().into_iter().enumerate() {
            let ip = format!("192.0.2.{}", 11 + i);
            let netns = Netns::new(&format!("{tag}-pod{i}"))?;
            let link = format!("n{i}");
            node.ok(&[
                "ip",
                "link",
                "add",
                &link,
                "type",
                "veth",
                "peer",
                "name",
                "p0",
                "netns",
                netns.name(),
            ]);
            node.ok(&["ip", "link", "set", &link, "up"]);
            node.ok(&["ip", "route", "add", &format!("{ip}/32"), "dev", &link]);
            netns.ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "p0"]);
            netns.ok(&["ip", "link", "set", "p0", "up"]);
            netns.ok(&["ip", "route", "add", &format!("{LOCAL_IP}/32"), "dev", "p0"]);
            // What kubelet writes for a pod with dnsPolicy ClusterFirst.
            netns.etc_file(
                "resolv.conf",
                &format!(
                    "nameserver {LOCAL_IP}\nsearch {POD_NAMESPACE}.svc.cluster.local \
                     svc.cluster.local cluster.local\noptions ndots:5{}\n",
                    resolver.options
                ),
            );
            // The machine's own name service setup stays out of the pod.
            netns.etc_file("nsswitch.conf", "hosts: files dns\n");
            netns.etc_file("hosts", "127.0.0.1 localhost\n::1 localhost\n");
            pods.push(Pod {
                resolver,
                netns,
                ip,
                log: log.clone(),
            });
        }
        Some(Lab {
            // libtest names each test's thread after the test.
            test: std::thread::current().name().unwrap_or(tag).to_string(),
            node,
            pods,
            log,
        })
    }

    /// Runs `body` against a forwarder in the node namespace, autopath on or off.
    fn with_world<T: Send>(&self, autopath: bool, body: impl FnOnce(&World) -> T + Send) -> T {
        println!("-- autopath {}", if autopath { "on" } else { "off" });
        let ips: Vec<String> = self.pods.iter().map(|p| p.ip.clone()).collect();
        self.node.run_inside(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let world = runtime.block_on(World::start(autopath, &ips));
            let result = body(&world);
            runtime.block_on(world.forwarder.stop());
            result
        })
    }
}

/// What runs in the node namespace: the forwarder on the local IP, its upstreams, and with
/// autopath the fake API server it watches this node's pods through.
struct World {
    forwarder: Forwarder,
    _watch: Option<PodWatch>,
    _api: Option<FakeApiServer>,
    _authority: Authority,
    _flip: Programmable,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(autopath: bool, pod_ips: &[String]) -> World {
        let cluster = zone("cluster.local.", 30, CLUSTER_RECORDS);
        let example_net = zone("example.net.", 60, EXAMPLE_NET_RECORDS);
        let authority = Authority::start(&[
            ("cluster.local.", &cluster),
            ("example.com.", EXAMPLE_COM),
            ("example.net.", &example_net),
        ])
        .await;
        let flip = flipping_upstream().await;
        let dir = tempfile::tempdir().expect("temp dir");
        // The node's resolv.conf: no search domains of its own.
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("write resolv.conf");
        let kubernetes = if autopath {
            format!("kubernetes:\n  enabled: true\n  node_name: {NODE}\n")
        } else {
            String::new()
        };
        let yaml = format!(
            "listen: [\"{LOCAL_IP}:53\"]\nresolv_conf: {resolv}\n{kubernetes}zones:\n\
             \x20 - name: cluster.local\n    upstreams: [\"{auth}\"]\n    autopath: {autopath}\n\
             \x20 - name: example.org\n    upstreams: [\"{flip}\"]\n\
             \x20 - name: .\n    upstreams: [\"{auth}\"]\n",
            resolv = resolv.display(),
            auth = authority.addr,
            flip = flip.addr,
        );
        let (forwarder, watch, api) = if autopath {
            let api = FakeApiServer::start().await;
            for (i, ip) in pod_ips.iter().enumerate() {
                // The reported case (coredns#2842): a Completed pod of another namespace once
                // held the IP the resolver's pod has now.
                api.apply(
                    FakePod::running("argo", &format!("job-{i}"), NODE, ip).phase("Succeeded"),
                );
                api.apply(FakePod::running(
                    POD_NAMESPACE,
                    &format!("web-{i}"),
                    NODE,
                    ip,
                ));
            }
            let (forwarder, watch) = Forwarder::with_pods(&yaml, api.client()).await;
            (forwarder, Some(watch), Some(api))
        } else {
            (Forwarder::start(&yaml).await, None, None)
        };
        World {
            forwarder,
            _watch: watch,
            _api: api,
            _authority: authority,
            _flip: flip,
            _dir: dir,
        }
    }

    /// Queries of `rtype` the forwarder answered so far (from every client).
    fn asked(&self, rtype: &str) -> f64 {
        self.forwarder
            .scrape()
            .sum("coredns_dns_requests_total", &[("type", rtype)])
    }

    /// Queries the forwarder answered over `proto` (`udp`, `tcp`).
    fn asked_over(&self, proto: &str) -> f64 {
        self.forwarder
            .scrape()
            .sum("coredns_dns_requests_total", &[("proto", proto)])
    }

    /// Looks `name` up from `pod` and returns the outcome and how many A and AAAA queries the
    /// forwarder got for it; checks they came over TCP exactly when the pod says `use-vc`.
    fn lookup_counted(&self, pod: &Pod, name: &str) -> (Lookup, (f64, f64)) {
        let upstream = || {
            self.forwarder
                .scrape()
                .sum("coredns_forward_requests_total", &[])
        };
        let before = (self.asked("A"), self.asked("AAAA"), self.asked_over("tcp"));
        let upstream_before = upstream();
        let lookup = pod.lookup(name);
        let asked = (self.asked("A") - before.0, self.asked("AAAA") - before.1);
        let over_tcp = self.asked_over("tcp") - before.2;
        println!(
            "{:<28} {:<20} the forwarder was asked {} A, {} AAAA ({over_tcp} over TCP) and \
             asked its upstreams {}",
            pod.resolver.label,
            name,
            asked.0,
            asked.1,
            upstream() - upstream_before
        );
        let expected_tcp = if pod.resolver.options.contains("use-vc") {
            asked.0 + asked.1
        } else {
            0.0
        };
        assert_eq!(
            over_tcp, expected_tcp,
            "{}: queries over TCP",
            pod.resolver.label
        );
        (lookup, asked)
    }
}

/// The upstream of `example.org`: `flip` has an A and an AAAA record whose TTLs (1 s and 3 s)
/// trade places every second; every other name is NXDOMAIN.
async fn flipping_upstream() -> Programmable {
    let started = Instant::now();
    let flip = name(FLIP);
    Programmable::start(
        Duration::ZERO,
        Arc::new(move |qname, rtype| {
            if *qname != flip {
                return Some((
                    ResponseCode::NXDomain,
                    vec![],
                    vec![soa("example.org.", 5, 5)],
                ));
            }
            let odd_second = started.elapsed().as_secs() % 2 == 1;
            let (ttl_a, ttl_aaaa) = if odd_second { (1, 3) } else { (3, 1) };
            let answers = match rtype {
                RecordType::A => vec![a_with(FLIP, ttl_a, [192, 0, 2, 70].into())],
                RecordType::AAAA => vec![aaaa(FLIP, ttl_aaaa)],
                _ => {
                    return Some((
                        ResponseCode::NoError,
                        vec![],
                        vec![soa("example.org.", 5, 5)],
                    ));
                }
            };
            Some((ResponseCode::NoError, answers, vec![]))
        }),
    )
    .await
}

fn ips(text: &[&str]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = text.iter().map(|t| t.parse().expect("an IP")).collect();
    ips.sort();
    ips
}

/// Why `lookup` did not find exactly `expected`, if it did not.
fn missed(lookup: &Lookup, expected: &[&str]) -> Option<String> {
    (!lookup.ok || lookup.addresses() != ips(expected)).then(|| {
        format!(
            "{} looking up {}: {} {}, expected {expected:?}",
            lookup.resolver,
            lookup.name,
            if lookup.ok { "found" } else { "failed:" },
            lookup.detail
        )
    })
}

/// Asserts that `lookup` found exactly `expected`.
fn found(lookup: &Lookup, expected: &[&str]) {
    if let Some(why) = missed(lookup, expected) {
        panic!("{why}");
    }
}

impl Lab {
    /// Looks `name` up from every pod in turn and asserts each found exactly `expected`
    /// (after all have tried, so a failure shows which resolvers failed).
    fn everyone_finds(&self, name: &str, expected: &[&str]) {
        let misses: Vec<String> = self
            .pods
            .iter()
            .filter_map(|pod| missed(&pod.lookup(name), expected))
            .collect();
        assert!(misses.is_empty(), "{}", misses.join("\n"));
    }
}

/// A short service name resolves through the search path: `cart` at the first search domain
/// (the pod's own namespace), `db.team-b` at the second after an NXDOMAIN at the first.
#[test]
fn short_service_names_resolve_through_the_search_path() {
    let Some(lab) = Lab::new("short") else {
        return;
    };
    for autopath in [false, true] {
        lab.with_world(autopath, |_| {
            lab.everyone_finds("cart", &["192.0.2.101"]);
            lab.everyone_finds("db.team-b", &["192.0.2.102"]);
        });
    }
}

/// An external name with ndots:5 resolves for every resolver; the pod walks its whole search
/// path first (3 search domains, then the name: 4 queries of each type) unless autopath
/// answers the first query with the name's records (1 of each type).
#[test]
fn external_names_resolve_and_autopath_answers_the_walk_in_one_query_per_type() {
    let Some(lab) = Lab::new("extern") else {
        return;
    };
    for (autopath, per_type) in [(false, 4.0), (true, 1.0)] {
        lab.with_world(autopath, |world| {
            for pod in &lab.pods {
                let (lookup, asked) = world.lookup_counted(pod, "api.example.com");
                found(&lookup, &["192.0.2.10", "2001:db8::10"]);
                assert_eq!(
                    asked,
                    (per_type, per_type),
                    "{} with autopath {autopath}: A and AAAA queries",
                    pod.resolver.label
                );
            }
        });
    }
}

/// The field case: the name's AAAA answer is a CNAME to a target with no AAAA. Every resolver
/// still gets the A record, walking the search path itself or through autopath.
#[test]
fn a_name_whose_aaaa_is_a_cname_to_no_aaaa_still_resolves_its_a_record() {
    let Some(lab) = Lab::new("field") else {
        return;
    };
    for autopath in [false, true] {
        lab.with_world(autopath, |_| {
            lab.everyone_finds("api.example.net", &["192.0.2.90"]);
        });
    }
}

/// A name whose A and AAAA TTLs trade places upstream every second, looked up by every
/// resolver at once, again and again for 3 s (cached pairs expire and are fetched again
/// meanwhile): no resolver ever gets NXDOMAIN, or no address, while another gets one.
#[test]
fn a_name_whose_ttls_flip_upstream_resolves_for_every_resolver_at_every_moment() {
    let Some(lab) = Lab::new("flip") else {
        return;
    };
    for autopath in [false, true] {
        lab.with_world(autopath, |_| {
            let names = vec!["flip.example.org"; 20];
            let running: Vec<_> = lab
                .pods
                .iter()
                .map(|pod| {
                    let child = pod
                        .command(&names, Some(Duration::from_millis(150)))
                        .spawn()
                        .expect("the resolver starts");
                    (pod, child)
                })
                .collect();
            let lookups: Vec<Lookup> = running
                .into_iter()
                .flat_map(|(pod, child)| {
                    pod.outcome(child.wait_with_output().expect("the resolver ends"))
                })
                .collect();
            let misses: Vec<String> = lookups
                .iter()
                .filter_map(|l| missed(l, &["192.0.2.70", "2001:db8::7"]))
                .collect();
            assert!(
                misses.is_empty(),
                "autopath {autopath}: {} of {} lookups missed:\n{}",
                misses.len(),
                lookups.len(),
                misses.join("\n")
            );
        });
    }
}

/// A pod IP that a Completed pod of namespace `argo` once held belongs to the Running pod of
/// `shop` now: every resolver's walk is answered through autopath with `shop`'s search path
/// (one query of each type, none skipped), and `cart` is `shop`'s service, not `argo`'s.
#[test]
fn a_pod_ip_a_completed_pod_once_held_gets_the_new_pods_namespace() {
    let Some(lab) = Lab::new("reused") else {
        return;
    };
    lab.with_world(true, |world| {
        for pod in &lab.pods {
            let (lookup, asked) = world.lookup_counted(pod, "api.example.com");
            found(&lookup, &["192.0.2.10", "2001:db8::10"]);
            assert_eq!(
                asked,
                (1.0, 1.0),
                "{}: answered by autopath",
                pod.resolver.label
            );
            found(&pod.lookup("cart"), &["192.0.2.101"]);
        }
        let skipped = world
            .forwarder
            .scrape()
            .sum("nodelocaldns_autopath_skipped_total", &[]);
        assert_eq!(skipped, 0.0, "autopath applied to every query of the pods");
        assert!(
            world
                .forwarder
                .scrape()
                .value("nodelocaldns_autopath_applied_total", &[])
                >= 2.0 * lab.pods.len() as f64
        );
    });
}
