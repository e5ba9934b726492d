//! A Kubernetes API server for tests: just enough of `/api/v1/pods` and of EndpointSlices for
//! the real kube client and kube-runtime's watcher, over plain HTTP/1.1 on 127.0.0.1.
//!
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName%3DNODE[&limit=..]`: a JSON `PodList` with
//!   `metadata.resourceVersion`.
//! - `GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3DSVC`:
//!   the same for the slices of one Service (an `EndpointSliceList`).
//! - `...&watch=true&resourceVersion=RV`: a chunked stream of newline-delimited watch events
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`) after RV; when RV is older than the history
//!   kept ([`FakeApiServer::compact`]), a single `ERROR` event with a 410 `Status` (what a real
//!   API server sends for "too old resource version").
//! - [`FakeApiServer::stop`] drops the listener and every connection (an API server crash);
//!   [`FakeApiServer::start_on`] serves the same state on the same port again.
//!
//! Written on tokio sockets rather than hyper so a test controls every connection: it can
//! end watch streams ([`FakeApiServer::end_watches`]) or cut them all at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

/// A pod as the tests describe it.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub phase: String,
    pub host_network: bool,
    pub terminating: bool,
}

impl FakePod {
    /// A Running pod on `node` with one IP.
    pub fn running(namespace: &str, name: &str, node: &str, ip: &str) -> FakePod {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            node: node.into(),
            ips: vec![ip.parse().expect("a valid test IP")],
            phase: "Running".into(),
            host_network: false,
            terminating: false,
        }
    }

    pub fn phase(mut self, phase: &str) -> FakePod {
        self.phase = phase.into();
        self
    }

    pub fn host_network(mut self) -> FakePod {
        self.host_network = true;
        self
    }

    fn to_json(&self, resource_version: u64) -> Value {
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect();
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "uid": format!("uid-{}-{}", self.namespace, self.name),
            "resourceVersion": resource_version.to_string(),
        });
        if self.terminating {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": self.node,
                "hostNetwork": self.host_network,
                "containers": [{ "name": "main", "image": "busybox" }],
            },
            "status": {
                "phase": self.phase,
                "podIP": self.ips.first().map(|ip| ip.to_string()),
                "podIPs": ips,
            },
        })
    }
}

/// An EndpointSlice of one Service, as the tests describe it.
#[derive(Debug, Clone)]
pub struct FakeEndpointSlice {
    pub namespace: String,
    pub name: String,
    pub service: String,
    /// (address, ready); the slice's `addressType` is the first address's family.
    pub endpoints: Vec<(IpAddr, bool)>,
    pub udp_port: u16,
    pub tcp_port: u16,
}

impl FakeEndpointSlice {
    /// A slice of `service` whose endpoints at `addresses` are ready, with kube-dns's ports
    /// (`dns` UDP 53, `dns-tcp` TCP 53).
    pub fn ready(
        namespace: &str,
        name: &str,
        service: &str,
        addresses: &[&str],
    ) -> FakeEndpointSlice {
        FakeEndpointSlice {
            namespace: namespace.into(),
            name: name.into(),
            service: service.into(),
            endpoints: addresses
                .iter()
                .map(|a| (a.parse().expect("a valid test IP"), true))
                .collect(),
            udp_port: 53,
            tcp_port: 53,
        }
    }

    /// Adds an endpoint whose `conditions.ready` is false.
    pub fn not_ready(mut self, address: &str) -> FakeEndpointSlice {
        self.endpoints
            .push((address.parse().expect("a valid test IP"), false));
        self
    }

    pub fn ports(mut self, udp: u16, tcp: u16) -> FakeEndpointSlice {
        (self.udp_port, self.tcp_port) = (udp, tcp);
        self
    }

    fn to_json(&self, resource_version: u64) -> Value {
        let v6 = self.endpoints.first().is_some_and(|(ip, _)| ip.is_ipv6());
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|(ip, ready)| {
                json!({
                    "addresses": [ip.to_string()],
                    "conditions": { "ready": ready, "serving": ready, "terminating": false },
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": format!("uid-{}-{}", self.namespace, self.name),
                "resourceVersion": resource_version.to_string(),
                "labels": { SERVICE_NAME_LABEL: self.service },
            },
            "addressType": if v6 { "IPv6" } else { "IPv4" },
            "endpoints": endpoints,
            "ports": [
                { "name": "dns", "protocol": "UDP", "port": self.udp_port },
                { "name": "dns-tcp", "protocol": "TCP", "port": self.tcp_port },
            ],
        })
    }
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object the server holds.
#[derive(Debug, Clone)]
enum Object {
    Pod(FakePod),
    Slice(FakeEndpointSlice),
}

/// How an object is found: (kind, namespace, name).
type Key = (&'static str, String, String);

impl Object {
    fn key(&self) -> Key {
        match self {
            Object::Pod(p) => ("Pod", p.namespace.clone(), p.name.clone()),
            Object::Slice(s) => ("EndpointSlice", s.namespace.clone(), s.name.clone()),
        }
    }

    fn to_json(&self, resource_version: u64) -> Value {
        match self {
            Object::Pod(p) => p.to_json(resource_version),
            Object::Slice(s) => s.to_json(resource_version),
        }
    }

    /// Whether a list or watch of `selection` includes this object.
    fn selected_by(&self, selection: &Selection) -> bool {
        match (self, selection) {
            (Object::Pod(p), Selection::Pods { node }) => {
                node.as_ref().is_none_or(|n| *n == p.node)
            }
            (Object::Slice(s), Selection::Slices { namespace, service }) => {
                *namespace == s.namespace && service.as_ref().is_none_or(|n| *n == s.service)
            }
            _ => false,
        }
    }
}

/// What one list or watch request asks for.
enum Selection {
    Pods {
        node: Option<String>,
    },
    Slices {
        namespace: String,
        service: Option<String>,
    },
}

impl Selection {
    /// The selection of a request, or `None` for a path this server does not serve.
    fn of(path: &str, params: &BTreeMap<String, String>) -> Option<Selection> {
        if path == "/api/v1/pods" {
            let node = params
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("spec.nodeName="))
                .map(str::to_string);
            return Some(Selection::Pods { node });
        }
        let namespace = path
            .strip_prefix("/apis/discovery.k8s.io/v1/namespaces/")?
            .strip_suffix("/endpointslices")?;
        let service = params
            .get("labelSelector")
            .and_then(|l| l.strip_prefix(SERVICE_NAME_LABEL)?.strip_prefix('='))
            .map(str::to_string);
        Some(Selection::Slices {
            namespace: namespace.to_string(),
            service,
        })
    }

    /// The list's (apiVersion, kind).
    fn list_type(&self) -> (&'static str, &'static str) {
        match self {
            Selection::Pods { .. } => ("v1", "PodList"),
            Selection::Slices { .. } => ("discovery.k8s.io/v1", "EndpointSliceList"),
        }
    }
}

/// One watch event, as stored in the history and streamed.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    /// The object as it was; `None` for a BOOKMARK, which every watch gets.
    object: Option<Object>,
    json: Value,
}

impl Change {
    fn wanted_by(&self, selection: &Selection) -> bool {
        self.object
            .as_ref()
            .is_none_or(|o| o.selected_by(selection))
    }
}

#[derive(Default)]
struct State {
    resource_version: u64,
    objects: BTreeMap<Key, Object>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    /// Requests served, by kind ("list", "watch"), for assertions.
    lists: usize,
    watches: usize,
}

/// The fake API server. State survives [`FakeApiServer::stop`].
pub struct FakeApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Option<Change>>,
    tasks: Option<JoinSet<()>>,
}

impl FakeApiServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut server = FakeApiServer::stopped(listener.local_addr().expect("bound"));
        server.serve(listener);
        server
    }

    /// A server that is not running yet, on a port that was free a moment ago (the API
    /// server is down at the client's start); [`FakeApiServer::start_on`] starts it.
    pub async fn not_started() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        drop(listener);
        FakeApiServer::stopped(addr)
    }

    fn stopped(addr: SocketAddr) -> FakeApiServer {
        let (changes, _) = broadcast::channel(1024);
        FakeApiServer {
            addr,
            state: Arc::new(Mutex::new(State {
                resource_version: 100,
                ..State::default()
            })),
            changes,
            tasks: None,
        }
    }

    /// (Re)starts serving on the same port.
    pub async fn start_on(&mut self) {
        assert!(self.tasks.is_none(), "already running");
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }

    /// Stops like a crash: the listener and every connection are dropped.
    pub fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
        }
    }

    /// The URL a kube client is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("a valid URL"));
        kube::Client::try_from(config).expect("a client for the fake API server")
    }

    /// Adds or replaces a pod (ADDED or MODIFIED).
    pub fn apply(&self, pod: FakePod) {
        self.put(Object::Pod(pod));
    }

    /// Deletes a pod (DELETED).
    pub fn delete(&self, namespace: &str, name: &str) {
        self.remove(("Pod", namespace.into(), name.into()));
    }

    /// Adds or replaces an EndpointSlice (ADDED or MODIFIED).
    pub fn apply_slice(&self, slice: FakeEndpointSlice) {
        self.put(Object::Slice(slice));
    }

    /// Deletes an EndpointSlice (DELETED).
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        self.remove(("EndpointSlice", namespace.into(), name.into()));
    }

    fn put(&self, object: Object) {
        let mut state = self.lock();
        let key = object.key();
        let kind = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.objects.insert(key, object.clone());
        self.record(&mut state, kind, Some(object));
    }

    fn remove(&self, key: Key) {
        let mut state = self.lock();
        if let Some(object) = state.objects.remove(&key) {
            self.record(&mut state, "DELETED", Some(object));
        }
    }

    /// Changes a pod without telling any watcher (as if the event was lost while the API
    /// server was down), and forgets the history: the next resumed watch gets 410 Gone.
    pub fn apply_unseen_and_compact(&self, pod: FakePod) {
        let mut state = self.lock();
        state.resource_version += 1;
        let object = Object::Pod(pod);
        state.objects.insert(object.key(), object);
        drop(state);
        self.compact();
    }

    /// Forgets the history: the next resumed watch gets 410 Gone and the watcher re-lists.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.oldest = state.resource_version;
    }

    /// Sends a BOOKMARK to every watch.
    pub fn bookmark(&self) {
        let state = self.lock();
        let change = Change {
            resource_version: state.resource_version,
            kind: "BOOKMARK",
            object: None,
            json: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "resourceVersion": state.resource_version.to_string() },
            }),
        };
        let _ = self.changes.send(Some(change));
    }

    /// Ends every watch stream cleanly (as the API server does at `timeoutSeconds`).
    pub fn end_watches(&self) {
        let _ = self.changes.send(None);
    }

    /// (lists, watches) served so far.
    pub fn requests(&self) -> (usize, usize) {
        let state = self.lock();
        (state.lists, state.watches)
    }

    /// Takes the next resourceVersion for a change of `object`, keeps it and streams it.
    fn record(&self, state: &mut State, kind: &'static str, object: Option<Object>) {
        state.resource_version += 1;
        let rv = state.resource_version;
        let change = Change {
            resource_version: rv,
            kind,
            json: object.as_ref().map_or(Value::Null, |o| o.to_json(rv)),
            object,
        };
        state.history.push(change.clone());
        let _ = self.changes.send(Some(change));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("test state lock")
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let state = self.state.clone();
        let changes = self.changes.clone();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let owned = connections.clone();
        tasks.spawn(async move {
            // Aborting this task drops the connections' JoinSet, which aborts them too.
            let _owned = owned;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, changes) = (state.clone(), changes.clone());
                connections
                    .lock()
                    .expect("connections lock")
                    .spawn(connection(stream, state, changes));
            }
        });
        self.tasks = Some(tasks);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves requests on one connection until it closes or a watch ends it.
async fn connection(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Option<Change>>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Headers: read up to the blank line; GETs have no body.
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header).await {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => {}
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let Some(selection) = Selection::of(path, &params) else {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "NotFound", "code": 404})
            .to_string();
            if respond(&mut writer, "404 Not Found", &body).await.is_err() {
                return;
            }
            continue;
        };
        let watching = params.get("watch").is_some_and(|w| w == "true" || w == "1");
        if !watching {
            let body = {
                let mut state = state.lock().expect("test state lock");
                state.lists += 1;
                let rv = state.resource_version;
                let items: Vec<Value> = state
                    .objects
                    .values()
                    .filter(|o| o.selected_by(&selection))
                    .map(|o| o.to_json(rv))
                    .collect();
                let (api_version, kind) = selection.list_type();
                json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": { "resourceVersion": rv.to_string() },
                    "items": items,
                })
                .to_string()
            };
            if respond(&mut writer, "200 OK", &body).await.is_err() {
                return;
            }
            continue;
        }
        let since: u64 = params
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the history, so no change falls between the two.
        let mut live = changes.subscribe();
        let (backlog, gone) = {
            let mut state = state.lock().expect("test state lock");
            state.watches += 1;
            let gone = since < state.oldest;
            let backlog: Vec<Change> = state
                .history
                .iter()
                .filter(|c| c.resource_version > since)
                .cloned()
                .collect();
            (backlog, gone)
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if gone {
            let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {since}"),
                "reason": "Expired", "code": 410}});
            let _ = write_chunk(&mut writer, &status).await;
            let _ = writer.write_all(b"0\r\n\r\n").await;
            continue;
        }
        let mut sent = since;
        for change in backlog.iter().filter(|c| c.wanted_by(&selection)) {
            if write_event(&mut writer, change).await.is_err() {
                return;
            }
            sent = change.resource_version;
        }
        loop {
            match live.recv().await {
                Ok(Some(change)) => {
                    if change.kind != "BOOKMARK" && change.resource_version <= sent {
                        continue;
                    }
                    if !change.wanted_by(&selection) {
                        continue;
                    }
                    if write_event(&mut writer, &change).await.is_err() {
                        return;
                    }
                    sent = sent.max(change.resource_version);
                }
                // end_watches, or the test is over.
                Ok(None) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => return,
            }
        }
        if writer.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

async fn write_event(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    change: &Change,
) -> std::io::Result<()> {
    write_chunk(
        writer,
        &json!({ "type": change.kind, "object": change.json }),
    )
    .await
}

async fn write_chunk(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    event: &Value,
) -> std::io::Result<()> {
    let line = format!("{event}\n");
    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
    writer.write_all(chunk.as_bytes()).await?;
    writer.flush().await
}

async fn respond(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    writer.write_all(response.as_bytes()).await
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
