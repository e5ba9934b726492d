//! The corpus of field Corefiles (`tests/data/corefiles/`): each file is a Corefile as an
//! installer, a chart or a user writes it, with a header of `# key: value` lines that say how
//! its DaemonSet launches it and what it must answer:
//!
//! - `# flags:` node-cache's command line; `{dir}` is the pod's config directory;
//! - `# env:` and `# files:` `NAME=VALUE` pairs (`; `-separated): the pod's environment, and
//!   files written into `{dir}` beside the Corefile;
//! - `# layout: template ...` marks a `Corefile.base` (node-cache's placeholders), any other
//!   layout a Corefile served as written;
//! - `# zones:` the zones the translation must route;
//! - `# upstream: IP DNSMASQ-OPTIONS...` (repeatable): a dnsmasq the cluster runs at `IP:53`
//!   (kube-dns, a stub domain's server, the node's resolv.conf nameserver), answering what the
//!   options say (`--host-record=...`, `--local=/zone/` for NXDOMAIN);
//! - `# ask: NAME TYPE -> RCODE [RDATA...]` (repeatable): a pod's query to the first `-localip`
//!   and the answer CoreDNS's semantics give: the rcode and the answer section's data, in any
//!   order.

use std::net::IpAddr;
use std::path::Path;

/// One Corefile of the corpus and its header.
pub struct CorpusEntry {
    pub name: String,
    pub text: String,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
    pub zones: Vec<String>,
    pub template: bool,
    pub upstreams: Vec<Upstream>,
    pub asks: Vec<Ask>,
}

/// A dnsmasq of the cluster: its address and what it answers.
pub struct Upstream {
    pub address: IpAddr,
    pub options: Vec<String>,
}

/// A pod's query and the answer it must get.
pub struct Ask {
    pub name: String,
    pub rtype: String,
    pub rcode: String,
    pub data: Vec<String>,
}

impl std::fmt::Display for Ask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

impl CorpusEntry {
    /// Writes the Corefile (or Corefile.base) and the header's files into `dir`.
    pub fn write_into(&self, dir: &Path) {
        for (path, content) in &self.files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
            std::fs::write(path, format!("{content}\n")).expect("write");
        }
        let corefile = if self.template {
            "Corefile.base"
        } else {
            "Corefile"
        };
        std::fs::write(dir.join(corefile), in_dir(&self.text, dir)).expect("write Corefile");
    }

    /// The launch flags, for a pod whose config directory is `dir`.
    pub fn flags_in(&self, dir: &Path) -> Vec<String> {
        self.flags.iter().map(|f| in_dir(f, dir)).collect()
    }

    /// The first `-localip` address: where the pods ask.
    pub fn local_ip(&self) -> IpAddr {
        let at = self
            .flags
            .iter()
            .position(|f| f == "-localip")
            .unwrap_or_else(|| panic!("{}: no -localip in # flags:", self.name));
        let list = self.flags.get(at + 1).expect("-localip's value");
        let first = list.split(',').next().expect("one address");
        first.parse().expect("-localip is an address")
    }
}

fn in_dir(text: &str, dir: &Path) -> String {
    text.replace("{dir}", &dir.display().to_string())
}

/// Every Corefile of the corpus, by file name.
pub fn corpus() -> Vec<CorpusEntry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corefiles");
    let mut entries: Vec<CorpusEntry> = std::fs::read_dir(&dir)
        .expect("the corpus")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "Corefile"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a Corefile");
            let name = path.file_name().expect("a name").to_string_lossy().into();
            entry(name, text)
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn entry(name: String, text: String) -> CorpusEntry {
    let all = |key: &str| -> Vec<String> {
        let prefix = format!("# {key}: ");
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    };
    let one = |key: &str| all(key).into_iter().next();
    let words = |value: &str| value.split_whitespace().map(str::to_string).collect();
    let pairs = |value: Option<String>| -> Vec<(String, String)> {
        value.map_or_else(Vec::new, |v| {
            v.split("; ")
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("NAME=VALUE");
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
    };
    let upstreams = all("upstream")
        .iter()
        .map(|line| {
            let (address, options) = line.split_once(' ').unwrap_or((line, ""));
            Upstream {
                address: address.parse().expect("# upstream: IP ..."),
                options: words(options),
            }
        })
        .collect();
    let asks = all("ask").iter().map(|line| ask(&name, line)).collect();
    CorpusEntry {
        flags: words(&one("flags").expect("# flags:")),
        env: pairs(one("env")),
        files: pairs(one("files")),
        zones: words(&one("zones").expect("# zones:")),
        template: one("layout").is_some_and(|l| l.starts_with("template")),
        upstreams,
        asks,
        name,
        text,
    }
}

fn ask(file: &str, line: &str) -> Ask {
    let (question, answer) = line
        .split_once(" -> ")
        .unwrap_or_else(|| panic!("{file}: `# ask: NAME TYPE -> RCODE [DATA...]`: {line}"));
    let (name, rtype) = question
        .split_once(' ')
        .unwrap_or_else(|| panic!("{file}: NAME TYPE: {line}"));
    let mut answer = answer.split_whitespace().map(str::to_string);
    Ask {
        name: name.to_string(),
        rtype: rtype.trim().to_string(),
        rcode: answer.next().expect("an rcode"),
        data: answer.collect(),
    }
}
