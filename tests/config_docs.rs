//! The README's configuration reference is the one list of keys a user reads: every key it
//! names is a key the config takes, and every default it states is the default a config gets.
//! (Unknown keys are errors, so a key the table names that the model lacks would fail the
//! user's config; a default that drifted would mislead them.)

use nodelocal_dns::config::Config;
use serde_yaml_ng::Value;

/// The rows of the README's table: (key, default cell).
fn reference_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("the configuration reference")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let key = cells[0]
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_string();
            (key, cells.get(1).copied().unwrap_or_default().to_string())
        })
        .collect()
}

/// The value at `path` (`a.b`, `zones[].c`: in the first element that has it), if the
/// serialized config has it. Sections that may not share a zone (`dns64` and `hosts`) are
/// found in different zones of the full config.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let (part, rest) = match path.split_once('.') {
        Some((part, rest)) => (part, Some(rest)),
        None => (path, None),
    };
    match (part.strip_suffix("[]"), rest) {
        (Some(list), Some(rest)) => at_list(value, list)?
            .iter()
            .find_map(|element| lookup(element, rest)),
        (Some(list), None) => at_list(value, list)?.first(),
        (None, Some(rest)) => lookup(value.get(part)?, rest),
        (None, None) => value.get(part),
    }
}

fn at_list<'v>(value: &'v Value, key: &str) -> Option<&'v Vec<Value>> {
    value.get(key)?.as_sequence()
}

/// A default cell that is one literal: `30s`, `true`, `["127.0.0.1:5300"]`.
fn literal(cell: &str) -> Option<Value> {
    let inner = cell.strip_prefix('`')?;
    let (literal, rest) = inner.split_once('`')?;
    if !rest.trim().is_empty() && !rest.trim_start().starts_with('(') {
        return None;
    }
    if literal.starts_with('$') {
        return None; // from the environment
    }
    serde_yaml_ng::from_str(literal).ok()
}

/// A config with every optional section present, so that their keys can be looked up.
const FULL: &str = "
node:
  local_ips: [169.254.20.10]
  fallback:
    local_ips: [169.254.20.10]
    service: kube-system/kube-dns
zones:
  - name: .
    upstreams: [192.0.2.53]
    transport: tls
    tls:
      server_name: dns.example
    log: true
    hosts:
      zones: [example.]
      entries: ['192.0.2.1 a.example']
    templates:
      - type: AAAA
        zones: [example.]
        match: ['.*']
        answer: ['{{ .Name }} 60 IN AAAA ::1']
        authority: ['example. 60 IN NS ns.example.']
        additional: ['ns.example. 60 IN A 192.0.2.1']
        rcode: NOERROR
        fallthrough: true
    rewrite:
      - match: suffix
        from: .corp.example.
        to: .svc.cluster.local.
        mode: continue
        answer: [{type: auto}]
  - name: example.org
    upstreams: [192.0.2.53]
    dns64: {}
";

/// The keys a row names: `a`, or `a`, `b` (and `a` / `b` / `c` for siblings).
fn row_keys(cell: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for part in cell.split("`, `").flat_map(|p| p.split("` / `")) {
        let key = part.trim_matches('`');
        // A sibling written by its last part only (`answer` / `authority`): the first's parent.
        let key = match (key.contains('.'), keys.first()) {
            (false, Some(first)) => match first.rsplit_once('.') {
                Some((parent, _)) => format!("{parent}.{key}"),
                None => key.to_string(),
            },
            _ => key.to_string(),
        };
        keys.push(key);
    }
    keys
}

/// Whether a stated default and the serialized one are the same value: durations in any
/// unit, zone names with or without their final dot.
fn same(stated: &Value, found: &Value) -> bool {
    if stated == found {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let (Some(a), Some(b)) = (text(stated), text(found)) else {
        return false;
    };
    if let (Ok(x), Ok(y)) = (humantime::parse_duration(&a), humantime::parse_duration(&b)) {
        return x == y;
    }
    a.trim_end_matches('.') == b.trim_end_matches('.')
}

#[test]
fn every_key_of_the_readme_reference_exists_with_the_default_it_states() {
    let yaml_of = |text: &str| -> Value {
        let config = Config::from_yaml(text, "test").expect("a valid config");
        serde_yaml_ng::from_str(&config.to_yaml()).expect("YAML")
    };
    let defaults = yaml_of("zones:\n  - name: .\n    upstreams: [192.0.2.53]\n");
    let full = yaml_of(FULL);
    let rows = reference_rows();
    assert!(rows.len() > 40, "the table: {} rows", rows.len());
    let mut wrong = Vec::new();
    for (cell_key, cell) in &rows {
        for key in row_keys(cell_key) {
            let path = key.trim_end_matches(".*");
            let found = lookup(&defaults, path);
            // An optional field with a default in words (`the system's roots`) is left out
            // when unset: its section must exist.
            let parent = path.rsplit_once('.').map_or(path, |(parent, _)| parent);
            let optional = literal(cell).is_none() && lookup(&full, parent).is_some();
            if found.is_none() && lookup(&full, path).is_none() && !optional {
                wrong.push(format!("{key}: not a key of the config"));
                continue;
            }
            // Defaults are checked for rows of one key, stated as one literal.
            let (Some(found), Some(stated), false) = (
                found,
                literal(cell),
                key.ends_with(".*") || cell_key.contains('/'),
            ) else {
                continue;
            };
            if row_keys(cell_key).len() == 1 && !same(&stated, found) {
                wrong.push(format!(
                    "{key}: the README says {cell}, the default is {}",
                    serde_yaml_ng::to_string(found).unwrap_or_default().trim()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the README's reference drifted:\n{}",
        wrong.join("\n")
    );
}

/// Every key path of `value` (`zones[].pool.queue.capacity`): mappings are walked into, a
/// sequence of mappings through every item, anything else is a leaf.
fn key_paths(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                let Some(key) = key.as_str() else { continue };
                let path = if at.is_empty() {
                    key.to_string()
                } else {
                    format!("{at}.{key}")
                };
                key_paths(value, &path, out);
            }
        }
        Value::Sequence(items) if items.first().is_some_and(Value::is_mapping) => {
            for item in items {
                key_paths(item, &format!("{at}[]"), out);
            }
        }
        // An optional section left out of one zone is not a key of its own.
        Value::Null => {}
        _ if !out.iter().any(|seen| seen == at) => out.push(at.to_string()),
        _ => {}
    }
}

/// The other way round: a key the config takes that the README does not name is a setting
/// users cannot find. (The README's rows are the only list: module docs point to it.)
#[test]
fn every_key_of_the_config_is_in_the_readme_reference() {
    let config = Config::from_yaml(FULL, "test").expect("a valid config");
    let full: Value = serde_yaml_ng::from_str(&config.to_yaml()).expect("YAML");
    let mut paths = Vec::new();
    key_paths(&full, "", &mut paths);
    assert!(paths.len() > 60, "the full config's keys: {paths:?}");
    let named: Vec<String> = reference_rows()
        .iter()
        .flat_map(|(cell_key, _)| row_keys(cell_key))
        .collect();
    let covered = |path: &str| {
        named.iter().any(|key| match key.strip_suffix(".*") {
            Some(section) => path.starts_with(&format!("{section}.")),
            // A list's row describes its items (`zones[].rewrite[].answer`).
            None => key == path || path.starts_with(&format!("{key}[].")),
        })
    };
    let missing: Vec<&String> = paths.iter().filter(|p| !covered(p)).collect();
    assert!(
        missing.is_empty(),
        "not in the README's reference: {missing:?}"
    );
}
