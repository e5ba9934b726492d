//! node-cache compatibility through the binary (src/nodecache/): the Corefile of the stock
//! nodelocaldns.yaml, rendered as node-cache renders it with a kube-dns ConfigMap's
//! stubDomains and upstreamNameservers, translates to the native config we expect; an
//! unsupported directive is an error naming the file and line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nodelocal_dns::config::{Config, Transport};

mod common;
use common::corpus::corpus;
use serde_yaml_ng::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nodelocal-dns");

/// The stock manifest's Corefile with the variables its install docs replace by `sed`
/// (node-cache itself fills in CLUSTER__DNS and UPSTREAM__SERVERS at start).
fn stock_corefile() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nodelocaldns.yaml");
    let text = std::fs::read_to_string(path).expect("stock manifest");
    let map = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .find(|doc: &Value| doc["kind"].as_str() == Some("ConfigMap"))
        .expect("the ConfigMap");
    map["data"]["Corefile"]
        .as_str()
        .expect("a Corefile")
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
}

/// `nodelocal-dns translate` with the stock DaemonSet's flags over files in `dir`.
fn translate(dir: &Path, corefile: &str) -> Output {
    std::fs::write(dir.join("Corefile.base"), corefile).expect("write Corefile");
    let kube_dns = dir.join("kube-dns");
    std::fs::create_dir_all(&kube_dns).expect("ConfigMap dir");
    std::fs::write(
        kube_dns.join("stubDomains"),
        r#"{"acme.local": ["10.0.0.5"]}"#,
    )
    .expect("stubDomains");
    std::fs::write(kube_dns.join("upstreamNameservers"), r#"["192.0.2.53"]"#)
        .expect("upstreamNameservers");
    let path = |name: &str| dir.join(name).display().to_string();
    Command::new(BIN)
        .args(["translate", "-localip", "169.254.20.10,10.96.0.10"])
        .args([
            "-conf",
            &path("Corefile"),
            "-basecorefile",
            &path("Corefile.base"),
        ])
        .args([
            "-upstreamsvc",
            "kube-dns-upstream",
            "-kubednscm",
            &path("kube-dns"),
        ])
        // What Kubernetes puts in the pod for the kube-dns-upstream Service.
        .env("KUBE_DNS_UPSTREAM_SERVICE_HOST", "10.96.0.11")
        .output()
        .expect("the binary runs")
}

/// What a successful `translate` printed; on failure, `what` and its error.
fn printed(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// What a successful `translate` printed, and the config it is: printed, a translation must
/// load as a native config.
fn translated(out: Output, what: &str) -> (String, Config) {
    let yaml = printed(out, what);
    let config = Config::from_yaml(&yaml, what).expect("a valid config");
    (yaml, config)
}

#[test]
fn the_stock_corefile_and_kube_dns_configmap_translate_to_the_native_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = translate(dir.path(), &stock_corefile());
    // The printed translation is itself a valid config.
    let (yaml, config) = translated(out, "translation");

    assert_eq!(
        config.listen,
        vec![
            "169.254.20.10:53".parse().expect("address"),
            "10.96.0.10:53".parse().expect("address")
        ]
    );
    assert_eq!(config.node.local_ips.len(), 2);
    assert!(config.node.setup_interface && config.node.setup_iptables);
    assert_eq!(config.node.interface_name, "nodelocaldns");
    assert_eq!(
        config.metrics.health_listen,
        Some("169.254.20.10:8080".parse().expect("address"))
    );

    let zone = |name: &str| {
        config
            .zones
            .iter()
            .find(|z| z.name.0.to_dotted() == name)
            .unwrap_or_else(|| panic!("zone {name} in {yaml}"))
    };
    for name in ["cluster.local.", "in-addr.arpa.", "ip6.arpa."] {
        let zone = zone(name);
        assert_eq!(
            zone.upstream_addrs(),
            vec!["10.96.0.11:53".parse().expect("address")],
            "{name} goes to kube-dns-upstream"
        );
        assert_eq!(zone.transport, Transport::Tcp, "{name}: force_tcp");
    }
    let cluster = zone("cluster.local.");
    assert!(cluster.cache.enabled);
    assert_eq!(cluster.cache.success_ttl, Duration::from_secs(30));
    assert_eq!(cluster.cache.denial_ttl, Duration::from_secs(5));
    // upstreamNameservers replace resolv.conf for everything else; stubDomains get a zone.
    assert_eq!(
        zone(".").upstream_addrs(),
        vec!["192.0.2.53:53".parse().expect("address")]
    );
    assert_eq!(
        zone("acme.local.").upstream_addrs(),
        vec!["10.0.0.5:53".parse().expect("address")]
    );
}

#[test]
fn an_unsupported_directive_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let corefile = stock_corefile().replacen("    reload\n", "    reload\n    whoami\n", 1);
    let line = corefile
        .lines()
        .position(|l| l.contains("whoami"))
        .expect("inserted")
        + 1;
    let out = translate(dir.path(), &corefile);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The rendered file's line (rendering keeps the lines), and the template it came from.
    assert!(
        stderr.contains(&format!("):{line}: unsupported directive `whoami`")),
        "line {line}: {stderr}"
    );
    assert!(stderr.contains("rendered from"), "{stderr}");
}

/// `nodelocal-dns translate` in the layout kubespray and RKE1 launch with: `text` written to
/// `dir/Corefile` and passed as `-conf`, and no `Corefile.base`. Returns the Corefile's path.
fn translate_conf_only(dir: &Path, text: &str, flags: &[&str]) -> (std::path::PathBuf, Output) {
    let corefile = dir.join("Corefile");
    std::fs::write(&corefile, text).expect("write Corefile");
    let out = Command::new(BIN)
        .arg("translate")
        .args(flags)
        .arg("-conf")
        .arg(&corefile)
        .arg("-basecorefile")
        .arg(dir.join("Corefile.base"))
        .output()
        .expect("the binary runs");
    (corefile, out)
}

/// kubespray's default layout (and RKE1's): the installer renders the Corefile itself and
/// passes `-conf /etc/coredns/Corefile`, with no `Corefile.base`. node-cache serves that file as
/// written; so do we, instead of refusing to start.
#[test]
fn without_a_base_corefile_the_conf_file_is_served_as_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, out) = translate_conf_only(
        dir.path(),
        "cluster.local:53 {\n    errors\n    cache {\n        success 9984 30\n        denial 9984 5\n    }\n    reload\n    loop\n    bind 169.254.25.10\n    forward . 10.233.0.3 {\n        force_tcp\n    }\n    prometheus :9253\n    health 169.254.25.10:9254\n}\n.:53 {\n    errors\n    cache 30\n    reload\n    loop\n    bind 169.254.25.10\n    forward . 10.233.0.3\n    prometheus :9253\n}\n",
        &[
            "-localip",
            "169.254.25.10",
            "-upstreamsvc",
            "coredns",
            "-health-port",
            "9254",
        ],
    );
    let missing = dir.path().join("Corefile.base");
    let (_, config) = translated(out, "translation");
    assert_eq!(
        config.listen,
        vec!["169.254.25.10:53".parse().expect("an address")]
    );
    let cluster = config
        .zones
        .iter()
        .find(|z| z.name.0.to_dotted() == "cluster.local.")
        .expect("the cluster.local zone");
    assert_eq!(cluster.transport, Transport::Tcp);
    assert!(
        !missing.exists(),
        "nothing is written where the template was missing"
    );

    // A -conf file that is missing too is still an error naming it.
    let out = Command::new(BIN)
        .args(["translate", "-localip", "169.254.25.10", "-conf"])
        .arg(dir.path().join("absent"))
        .arg("-basecorefile")
        .arg(&missing)
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent: cannot read"));
}

/// `translate` keeps `forward . /etc/resolv.conf` as `resolv.conf`: its output, copied into a
/// ConfigMap, reads each node's own resolv.conf rather than pinning the nameservers of the
/// machine it ran on. `check-config` shows what this machine would serve.
#[test]
fn translate_keeps_resolv_conf_for_every_node_and_check_config_expands_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (corefile, out) = translate_conf_only(
        dir.path(),
        ".:53 {\n    bind 169.254.20.10\n    cache 30\n    forward . /etc/resolv.conf\n}\n",
        &["-localip", "169.254.20.10"],
    );
    let yaml = printed(out, "translation");
    assert!(
        yaml.contains("  upstreams:\n  - resolv.conf\n"),
        "the portable form: {yaml}"
    );

    let out = Command::new(BIN)
        .args(["check-config", "--corefile"])
        .arg(&corefile)
        .output()
        .expect("the binary runs");
    let effective = String::from_utf8(out.stdout).expect("UTF-8");
    if out.status.success() {
        assert!(
            !effective.contains("- resolv.conf"),
            "check-config shows this machine's nameservers: {effective}"
        );
    }
}

/// `import` as installers use it: top-level server blocks from an optional directory
/// (`import custom/*.server`, often empty) and directives inside a block
/// (`import custom/*.override`), relative to the Corefile's directory. An error in an imported
/// file names that file and its line.
#[test]
fn imports_splice_blocks_and_directives_and_errors_name_the_imported_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let custom = dir.path().join("custom");
    std::fs::create_dir(&custom).expect("custom dir");
    std::fs::write(
        custom.join("acme.server"),
        "acme.internal:53 {\n    bind 169.254.20.10\n    forward . 10.0.0.53\n}\n",
    )
    .expect("write");
    std::fs::write(custom.join("log.override"), "# every query\nlog\n").expect("write");
    let corefile = ".:53 {\n    bind 169.254.20.10\n    import custom/*.override\n    forward . 10.96.0.10\n}\nimport custom/*.server\nimport optional/*.server\n";
    let (_, out) = translate_conf_only(dir.path(), corefile, &["-localip", "169.254.20.10"]);
    let (yaml, config) = translated(out, "translation");
    let zones: Vec<String> = config.zones.iter().map(|z| z.name.0.to_dotted()).collect();
    assert!(zones.contains(&"acme.internal.".to_string()), "{zones:?}");
    let root = config
        .zones
        .iter()
        .find(|z| z.name.0.to_dotted() == ".")
        .expect("the root zone");
    assert!(
        !root.log.is_off(),
        "the imported `log` applies to its block"
    );
    assert!(
        !config
            .zones
            .iter()
            .any(|z| !z.log.is_off() && z.name.0.to_dotted() != "."),
        "and to no other block"
    );
    assert!(
        yaml.contains("import optional/*.server: no file matches"),
        "a glob with no match is a warning: {yaml}"
    );

    std::fs::write(custom.join("log.override"), "# every query\nlogg\n").expect("write");
    let (_, out) = translate_conf_only(dir.path(), corefile, &["-localip", "169.254.20.10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let at = format!(
        "{}:2: unsupported directive `logg`",
        custom.join("log.override").display()
    );
    assert!(stderr.contains(&at), "want {at}: {stderr}");

    let (_, out) = translate_conf_only(
        dir.path(),
        ".:53 {\n    bind 169.254.20.10\n    import extra.conf\n    forward . 10.96.0.10\n}\n",
        &["-localip", "169.254.20.10"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Corefile:3: import extra.conf: no such file"),
        "a plain path must exist: {stderr}"
    );
}

/// A block that forwards to an address it binds is accepted, as CoreDNS accepts it (IPVS takes
/// such a query to the kube-dns pods first), with a warning at the block; forwarding to our own
/// loopback listener is a loop nothing can redirect, refused at the Corefile's line, not at a
/// line of the YAML the translation made.
#[test]
fn forwarding_to_an_own_bind_is_warned_and_a_loopback_loop_is_refused_at_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, out) = translate_conf_only(
        dir.path(),
        "cluster.local:53 {\n    errors\n    bind 169.254.20.10 10.96.0.10\n    forward . 10.96.0.10\n}\n",
        &["-localip", "169.254.20.10,10.96.0.10"],
    );
    let yaml = printed(out, "translation");
    assert!(
        yaml.contains("Corefile:1: forwards to 10.96.0.10:53, which this server also binds"),
        "{yaml}"
    );

    let (corefile, out) = translate_conf_only(
        dir.path(),
        "# loopback\n\n.:53 {\n    bind 127.0.0.1\n    forward . 127.0.0.1\n}\n",
        &["-localip", "127.0.0.1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let at = format!(
        "{}:3: zones[0].upstreams (translated): 127.0.0.1:53 is where this server listens",
        corefile.display()
    );
    assert!(stderr.contains(&at), "want {at}: {stderr}");
}

/// Every Corefile of the corpus (the installers' and charts' layouts, and users'
/// customisations) translates with the command line its DaemonSet uses, and routes the zones
/// it names.
#[test]
fn every_corefile_of_the_corpus_translates_with_its_launch_flags() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "the corpus: {} files", corpus.len());
    for entry in corpus {
        let dir = tempfile::tempdir().expect("temp dir");
        entry.write_into(dir.path());
        let out = Command::new(BIN)
            .arg("translate")
            .args(entry.flags_in(dir.path()))
            .envs(entry.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("the binary runs");
        let name = &entry.name;
        let (yaml, config) = translated(out, name);
        let mut zones: Vec<String> = config.zones.iter().map(|z| z.name.0.to_dotted()).collect();
        let mut want = entry.zones.clone();
        zones.sort();
        want.sort();
        assert_eq!(zones, want, "{name}: the zones routed\n{yaml}");
    }
}
