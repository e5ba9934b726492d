//! The manifests in `deploy/`, parsed into typed Kubernetes objects: the invariants a
//! node DNS cache's DaemonSet must keep, a ConfigMap our config reader accepts, and a stock
//! overlay that changes nothing but the image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use nodelocal_dns::config::{Config, env};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Every document of a multi-document YAML file.
fn documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|err| panic!("{path}: {err}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one object of `kind` in `path`, as its typed form.
fn one<T: DeserializeOwned>(path: &str, kind: &str) -> T {
    let matching: Vec<Value> = documents(path)
        .into_iter()
        .filter(|doc| doc.get("kind").and_then(Value::as_str) == Some(kind))
        .collect();
    assert_eq!(matching.len(), 1, "one {kind} in {path}");
    serde_yaml_ng::from_value(matching[0].clone())
        .unwrap_or_else(|err| panic!("{path}: {kind} does not parse: {err}"))
}

fn container(daemonset: &DaemonSet) -> Container {
    let pod = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("a pod spec");
    assert_eq!(pod.containers.len(), 1, "one container");
    pod.containers[0].clone()
}

#[test]
fn the_daemonset_keeps_a_node_dns_caches_invariants() {
    let daemonset: DaemonSet = one("deploy/daemonset.yaml", "DaemonSet");
    let pod = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("a pod spec");
    assert_eq!(pod.host_network, Some(true), "serves the node's addresses");
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("Default"),
        "never itself as resolver"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerated: BTreeSet<String> = pod
        .tolerations
        .unwrap_or_default()
        .iter()
        .filter(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
        .filter_map(|t| t.effect.clone())
        .collect();
    assert_eq!(
        tolerated,
        BTreeSet::from(["NoExecute".to_string(), "NoSchedule".to_string()]),
        "runs on every node, tainted or not"
    );

    // Zero-gap rollout: a surge pod beside the old one, which host ports would forbid.
    let strategy = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.clone())
        .and_then(|s| s.rolling_update)
        .expect("a rolling update");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert!(matches!(strategy.max_surge, Some(IntOrString::String(ref p)) if p != "0%"));
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    let node_cache = container(&daemonset);
    assert!(
        node_cache.ports.is_none(),
        "host ports would block the surge pod"
    );
    assert!(
        pod.termination_grace_period_seconds
            .is_some_and(|s| s >= 30)
    );
    let security = node_cache.security_context.expect("a security context");
    let capabilities = security.capabilities.expect("capabilities");
    let added: BTreeSet<String> = capabilities.add.unwrap_or_default().into_iter().collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN".to_string(), "NET_BIND_SERVICE".to_string()])
    );
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
    assert_ne!(security.privileged, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    let probe_path = |probe: Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|p| p.http_get)
            .map(|get| (get.host, get.path, get.port))
            .expect("an HTTP probe")
    };
    let (live_host, live_path, live_port) = probe_path(node_cache.liveness_probe);
    let (ready_host, ready_path, ready_port) = probe_path(node_cache.readiness_probe);
    assert_eq!(live_path.as_deref(), Some("/health"));
    assert_eq!(ready_path.as_deref(), Some("/ready"));
    assert_eq!(
        (live_host.clone(), live_port.clone()),
        (ready_host, ready_port)
    );

    let resources = node_cache.resources.expect("resources");
    for (what, list) in [
        ("requests", resources.requests),
        ("limits", resources.limits),
    ] {
        let list = list.unwrap_or_else(|| panic!("{what} set"));
        assert!(list.contains_key("memory"), "{what}.memory");
    }

    // The probes reach what the config serves: health_listen on the local IP.
    let config = native_config();
    let health = config.metrics.health_listen.expect("metrics.health_listen");
    assert_eq!(live_host.as_deref(), Some(health.ip().to_string().as_str()));
    let port = match live_port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port) => port,
        other => panic!("numeric probe port, not {other:?}"),
    };
    assert_eq!(port, i32::from(health.port()));
    assert_eq!(
        config.node.health_port,
        health.port(),
        "the rules let kubelet in"
    );

    // The config volume is the ConfigMap, mounted where the args read it.
    let env: Vec<String> = node_cache
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|var| var.name)
        .collect();
    assert!(
        env.contains(&"NODE_NAME".to_string()),
        "the config reads ${{NODE_NAME}}"
    );
    let args = node_cache.args.unwrap_or_default();
    assert_eq!(args[..2], ["run".to_string(), "--config".to_string()]);
    let mount = node_cache
        .volume_mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| args[2].starts_with(&m.mount_path))
        .expect("the config file is on a mounted volume");
    let volume = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume exists");
    let map: ConfigMap = one("deploy/configmap.yaml", "ConfigMap");
    assert_eq!(
        volume.config_map.map(|c| c.name),
        map.metadata.name,
        "mounts our ConfigMap"
    );
    assert!(args[2].ends_with("/config.yaml"));

    let account: ServiceAccount = one("deploy/serviceaccount.yaml", "ServiceAccount");
    assert_eq!(pod.service_account_name, account.metadata.name);
}

/// The ConfigMap's config, with the environment Kubernetes gives the pod.
fn native_config() -> Config {
    let map: ConfigMap = one("deploy/configmap.yaml", "ConfigMap");
    let text = map
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .expect("config.yaml in the ConfigMap");
    // Kubernetes sets the first for the kube-dns-upstream Service; the DaemonSet the second.
    let text = env::expand(&text, |name| match name {
        "KUBE_DNS_UPSTREAM_SERVICE_HOST" => Some("10.96.0.11".into()),
        "NODE_NAME" => Some("node-1".into()),
        _ => None,
    })
    .expect("only variables the pod has are used");
    Config::from_yaml(&text, "deploy/configmap.yaml").expect("the config is valid")
}

#[test]
fn the_configmap_is_a_valid_config_for_the_local_ips() {
    let config = native_config();
    let local: Vec<String> = config
        .node
        .local_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(local.contains(&"169.254.20.10".to_string()), "{local:?}");
    for ip in &config.node.local_ips {
        assert!(
            config
                .listen
                .iter()
                .any(|l| l.ip() == *ip && l.port() == 53),
            "listens on {ip}:53"
        );
    }
    assert!(config.node.setup_interface && config.node.setup_iptables);
    let cluster = config
        .zones
        .iter()
        .find(|z| z.name.0.to_dotted() == "cluster.local.")
        .expect("a cluster.local zone");
    assert_eq!(
        cluster.upstream_addrs(),
        vec!["10.96.0.11:53".parse().expect("address")]
    );
    assert!(cluster.autopath && config.kubernetes.enabled);
    assert_eq!(config.kubernetes.node_name.as_deref(), Some("node-1"));
}

#[test]
fn rbac_grants_pods_cluster_wide_and_endpoint_slices_in_kube_system_only() {
    let local: Role = one("deploy/serviceaccount.yaml", "Role");
    assert_eq!(local.metadata.namespace.as_deref(), Some("kube-system"));
    let local_rules = local.rules.unwrap_or_default();
    assert_eq!(local_rules.len(), 1);
    assert_eq!(
        local_rules[0].api_groups,
        Some(vec!["discovery.k8s.io".to_string()])
    );
    assert_eq!(
        local_rules[0].resources,
        Some(vec!["endpointslices".to_string()])
    );
    assert_eq!(
        local_rules[0].verbs,
        vec!["list".to_string(), "watch".to_string()]
    );
    let local_binding: RoleBinding = one("deploy/serviceaccount.yaml", "RoleBinding");
    assert_eq!(local_binding.role_ref.name, "node-local-dns");
    assert_eq!(local_binding.role_ref.kind, "Role");

    let role: ClusterRole = one("deploy/serviceaccount.yaml", "ClusterRole");
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources, Some(vec!["pods".to_string()]));
    assert_eq!(
        rules[0].verbs,
        vec!["list".to_string(), "watch".to_string()]
    );
    let binding: ClusterRoleBinding = one("deploy/serviceaccount.yaml", "ClusterRoleBinding");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subject = &binding.subjects.unwrap_or_default()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("node-local-dns", Some("kube-system"))
    );
}

#[test]
fn the_upstream_service_selects_kube_dns_on_udp_and_tcp() {
    let services: Vec<Service> = documents("deploy/service.yaml")
        .into_iter()
        .map(|doc| serde_yaml_ng::from_value(doc).expect("a Service"))
        .collect();
    let upstream = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("kube-dns-upstream"))
        .expect("kube-dns-upstream");
    let spec = upstream.spec.clone().expect("spec");
    assert_eq!(
        spec.selector
            .and_then(|s| s.get("k8s-app").cloned())
            .as_deref(),
        Some("kube-dns")
    );
    let protocols: BTreeSet<String> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.port == 53)
        .filter_map(|p| p.protocol)
        .collect();
    assert_eq!(protocols, BTreeSet::from(["TCP".into(), "UDP".into()]));
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization: Value =
        serde_yaml_ng::from_str(&read("deploy/kustomization.yaml")).expect("YAML");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&root)
        .expect("deploy/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        // Not applied by kustomize: the operator's CRD object, and kustomize's own file.
        .filter(|name| name != "kustomization.yaml" && name != "prometheus-rules.yaml")
        .collect();
    assert_eq!(listed, on_disk);
}

#[test]
fn the_stock_overlay_changes_only_the_image() {
    let stock = documents("deploy/stock/nodelocaldns.yaml");
    assert_eq!(
        stock,
        documents("tests/data/nodelocaldns.yaml"),
        "the stock manifest is kept verbatim"
    );
    let daemonset: DaemonSet = one("deploy/stock/nodelocaldns.yaml", "DaemonSet");
    let image = container(&daemonset).image.expect("an image");
    let kustomization: Value =
        serde_yaml_ng::from_str(&read("deploy/stock/kustomization.yaml")).expect("YAML");
    let images = kustomization["images"].as_sequence().expect("images");
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0]["name"].as_str(),
        image.split(':').next(),
        "the override names the stock image"
    );
    assert_eq!(
        kustomization["resources"].as_sequence().map(Vec::len),
        Some(1)
    );
    for key in kustomization.as_mapping().expect("a mapping").keys() {
        let key = key.as_str().unwrap_or("");
        assert!(
            ["apiVersion", "kind", "resources", "images"].contains(&key),
            "the overlay does nothing but the image: {key}"
        );
    }
    // The image that replaces it is the one deploy/ uses, built by deploy/Dockerfile.
    let ours: DaemonSet = one("deploy/daemonset.yaml", "DaemonSet");
    let ours = container(&ours).image.expect("an image");
    assert_eq!(
        Some(ours.as_str()),
        Some(format!(
            "{}:{}",
            images[0]["newName"].as_str().unwrap_or(""),
            images[0]["newTag"].as_str().unwrap_or("")
        ))
        .as_deref()
    );
}

#[test]
fn the_image_has_iptables_and_node_caches_entrypoint() {
    let dockerfile = read("deploy/Dockerfile");
    let runtime = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    assert!(runtime.contains("iptables"), "the node rules need iptables");
    assert!(runtime.contains("ENTRYPOINT [\"/node-cache\"]"));
    assert!(dockerfile.contains("cargo build --release --locked"));
}

/// The Kubernetes version the manifests are validated against: the API k8s-openapi is built
/// for (its `v1_33` feature).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The manifests kustomize applies, and the stock overlay's base.
const MANIFESTS: [&str; 5] = [
    "deploy/serviceaccount.yaml",
    "deploy/configmap.yaml",
    "deploy/service.yaml",
    "deploy/daemonset.yaml",
    "deploy/stock/nodelocaldns.yaml",
];

/// `kubernetes-validate` (PyPI; it bundles the Kubernetes API's JSON schemas, so it works
/// offline): `$KUBERNETES_VALIDATE`, which scripts/test.sh sets to the one it installs, else
/// one on PATH. `None` (with a message) outside CI when there is none; in CI a missing one
/// fails.
fn validator() -> Option<PathBuf> {
    let found = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .or_else(|| {
            Command::new("kubernetes-validate")
                .arg("--version")
                .output()
                .is_ok()
                .then(|| PathBuf::from("kubernetes-validate"))
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI validates the manifests: scripts/test.sh installs kubernetes-validate"
        );
        eprintln!("skipped: kubernetes-validate is not installed (scripts/test.sh installs it)");
    }
    found
}

/// Validates `files` strictly (unknown fields are errors) against the Kubernetes API schemas:
/// whether every object in them has a schema and matches it, and what the validator said.
fn validates(validator: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: usize = files
        .iter()
        .map(|f| documents(f.to_str().expect("a UTF-8 path")).len())
        .sum();
    // A kind or apiVersion it has no schema for is only a warning to it (CRDs); here it is
    // a manifest the API server would reject.
    let passed = said.matches(" passed for resource ").count();
    (out.status.success() && passed == objects, said)
}

#[test]
fn the_manifests_validate_against_the_kubernetes_api_schemas() {
    let Some(validator) = validator() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|f| root.join(f)).collect();
    let (valid, said) = validates(&validator, &files);
    assert!(valid, "{said}");

    // Each kind of mistake fails: a misspelled field, a wrong type, a wrong apiVersion.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = [
        (
            "deploy/daemonset.yaml",
            "hostNetwork: true",
            "hostNetwrok: true",
        ),
        ("deploy/service.yaml", "port: 53", "port: fifty-three"),
        (
            "deploy/serviceaccount.yaml",
            "verbs: [\"list\", \"watch\"]",
            "verbs: list",
        ),
        (
            "deploy/daemonset.yaml",
            "apiVersion: apps/v1",
            "apiVersion: apps/v2",
        ),
    ];
    for (i, (file, good, bad)) in broken.iter().enumerate() {
        let text = read(file);
        assert!(text.contains(good), "{file} has {good}");
        let copy = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&copy, text.replacen(good, bad, 1)).expect("write the broken copy");
        let (valid, said) = validates(&validator, &[copy]);
        assert!(!valid, "{file} with {bad:?} passed: {said}");
    }
}
