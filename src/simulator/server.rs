//! The HTTPS edge of the simulator: listeners per instance (opened and
//! closed as instances come, go and refuse), the `kubernetes` Service
//! address, bearer-token checks, and the request handler.

// Shell (I/O allowed, see clippy.toml): listeners, timers, request logs.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::clock::Clock;
use crate::endpointslice::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice, EndpointSliceList, ListMeta,
    ObjectMeta, SERVICE_NAME_LABEL,
};
use crate::time::Timestamp;

use super::attribution::{AttributionSim, Reply};
use super::page::{Bulk, render_served};
use super::scenario::OutageMode;
use super::world::{AuthOutcome, Presence, World};

/// How often listeners re-check whether their instance should accept
/// connections, in real time. Short, so outages start and end promptly.
const POLL: Duration = Duration::from_millis(20);

/// State shared by every listener and connection of one simulation.
pub(crate) struct Shared {
    pub(crate) world: Mutex<World>,
    pub(crate) clock: Clock,
    pub(crate) auth: Mutex<Auth>,
    pub(crate) bulk: Vec<Arc<Bulk>>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) tls: Vec<Arc<ServerConfig>>,
    pub(crate) vip_cursor: AtomicUsize,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// ConfigMaps and Leases of one namespace (`objects.rs`).
    pub(crate) objects: super::objects::Objects,
    pub(crate) attribution: AttributionSim,
}

/// The accepted bearer tokens: the token file's current content, replaced
/// ones until their grace ends, and the forbidden token (authenticated, but
/// without `/metrics` permission).
pub(crate) struct Auth {
    pub(crate) token_path: PathBuf,
    pub(crate) current: Option<String>,
    pub(crate) previous: Vec<(String, Timestamp)>,
    pub(crate) grace: Duration,
    pub(crate) forbidden: String,
    pub(crate) rotations_seen: u64,
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// One instance.
    Instance(usize),
    /// The `kubernetes` Service address: each connection goes to the next
    /// present instance, as kube-proxy would do.
    Service,
}

enum Presented {
    None,
    Accepted(u64),
    Forbidden(u64),
    Invalid,
}

impl Shared {
    /// Locks the world and advances it to the clock's now; also writes a new
    /// token for each rotation event that fired since the last look.
    pub(crate) fn world_now(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock().unwrap_or_else(|p| p.into_inner());
        world.advance(self.clock.now());
        let rotations = world.rotations();
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        while auth.rotations_seen < rotations {
            auth.rotations_seen += 1;
            // A failed write leaves the old token in place: the test or scenario
            // then sees no rotation, which is visible, never a silent success.
            let _ = write_token(&auth.token_path, &random_token());
        }
        auth.refresh(world.now());
        world
    }

    /// Whether the process that started at `start` still serves instance `i`.
    fn process_alive(&self, i: usize, start: Timestamp) -> bool {
        self.should_listen(i)
            && self
                .world_now()
                .view(i)
                .is_some_and(|v| v.start_time == start)
    }

    fn should_listen(&self, i: usize) -> bool {
        let world = self.world_now();
        world.view(i).is_some_and(|v| {
            v.presence == Presence::Up && !matches!(v.outage, Some((OutageMode::Refuse, _)))
        })
    }
}

impl Auth {
    /// Re-reads the token file; a changed token becomes current and the old
    /// one stays accepted for the grace period.
    fn refresh(&mut self, now: Timestamp) {
        if let Ok(text) = std::fs::read_to_string(&self.token_path) {
            let token = text.trim().to_string();
            if !token.is_empty()
                && self.current.as_deref() != Some(token.as_str())
                && let Some(old) = self.current.replace(token)
            {
                self.previous.push((old, (now + self.grace)));
            }
        }
        self.previous.retain(|(_, until)| *until > now);
    }

    fn check(&self, presented: Option<&str>) -> Presented {
        let Some(token) = presented else {
            return Presented::None;
        };
        let hash = token_hash(token);
        if self.current.as_deref() == Some(token) || self.previous.iter().any(|(t, _)| t == token) {
            Presented::Accepted(hash)
        } else if self.forbidden == token {
            Presented::Forbidden(hash)
        } else {
            Presented::Invalid
        }
    }
}

/// Writes a token file atomically (temp file + rename), as kubelet swaps
/// projected volumes, so a reader never sees half a token.
pub(crate) fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// 32 random bytes, hex: unguessable, and never logged.
pub(crate) fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // SystemRandom only fails if the OS has no entropy source; a zero token
    // would then still differ from the previous one only by luck, so mix in time.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_hash(token: &str) -> u64 {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// Serves instance `i` on `addr` for as long as the simulation runs,
/// closing the port while the instance is absent or refusing.
pub(crate) async fn serve_instance(
    shared: Arc<Shared>,
    i: usize,
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
) {
    let acceptor = TlsAcceptor::from(shared.tls[i].clone());
    let mut shutdown = shared.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let should = shared.should_listen(i);
        if should && listener.is_none() {
            listener = TcpListener::bind(addr).await.ok();
        } else if !should {
            listener = None;
        }
        match &listener {
            Some(l) => tokio::select! {
                accepted = l.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_connection(shared.clone(), acceptor.clone(), stream, Target::Instance(i)));
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            },
            None => tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            },
        }
    }
}

/// Serves the `kubernetes` Service address.
pub(crate) async fn serve_service(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(shared.clone(), acceptor.clone(), stream, Target::Service));
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    target: Target,
) {
    let mut shutdown = shared.shutdown.clone();
    let target = match target {
        Target::Service => {
            let up: Vec<usize> = {
                let world = shared.world_now();
                (0..world.instance_count())
                    .filter(|i| world.view(*i).is_some_and(|v| v.presence == Presence::Up))
                    .collect()
            };
            if up.is_empty() {
                return;
            }
            Target::Instance(up[shared.vip_cursor.fetch_add(1, Ordering::Relaxed) % up.len()])
        }
        t => t,
    };
    let Target::Instance(i) = target else { return };
    // The process that accepted this connection: when it stops (restart,
    // removal, refuse outage) the connection dies with it, as a real
    // apiserver's keep-alive connections do.
    let Some(process) = shared.world_now().view(i).map(|v| v.start_time) else {
        return;
    };
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
    let Ok(Ok(tls)) = handshake.await else { return };
    let watcher = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, i, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(POLL) => {
                if !watcher.process_alive(i, process) {
                    return;
                }
            }
        }
    }
}

type ResBody = BoxBody<Bytes, Infallible>;

async fn handle(shared: &Shared, i: usize, req: Request<Incoming>) -> Response<ResBody> {
    // A hanging instance answers nothing until the outage ends (or we stop).
    loop {
        let hanging = matches!(
            shared.world_now().view(i).and_then(|v| v.outage),
            Some((OutageMode::Hang, _))
        );
        if !hanging || *shared.shutdown.borrow() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let presented = shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(bearer);
    let path = req.uri().path();
    let public = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    if let Some(route) = super::objects::route(req.method(), path) {
        return match presented {
            Presented::Accepted(_) => objects_response(shared, &route, req).await,
            Presented::Forbidden(_) => status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "forbidden: User \"system:serviceaccount:monitoring:no-metrics\" cannot access this object",
            ),
            _ => status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        };
    }
    let mut world = shared.world_now();
    let forbidden = match presented {
        Presented::Invalid => {
            world.failed_authentication(i);
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        Presented::None if !public => {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        Presented::None => false,
        Presented::Accepted(hash) | Presented::Forbidden(hash) => {
            if world.scraper_request(i, hash) == AuthOutcome::Rejected {
                return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
            }
            matches!(presented, Presented::Forbidden(_))
        }
    };
    let Some(view) = world.view(i) else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no such instance",
        );
    };
    if forbidden && !public {
        let verb = if req.method() == Method::DELETE {
            "delete"
        } else {
            "get"
        };
        let message = format!(
            "forbidden: User \"system:serviceaccount:monitoring:no-metrics\" cannot {verb} path \"{path}\""
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    if path == "/metrics" && matches!(view.outage, Some((OutageMode::Http403, _))) {
        let verb = if req.method() == Method::DELETE {
            "delete"
        } else {
            "get"
        };
        let message = format!(
            "forbidden: User \"system:serviceaccount:monitoring:cutover-auditor\" cannot {verb} path \"/metrics\" (simulated outage)"
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    if matches!(view.outage, Some((OutageMode::Http500, _))) {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: simulated outage",
        );
    }
    let slow = match view.outage {
        Some((OutageMode::Slow, delay)) => Some(shared.clock.to_real(delay)),
        _ => None,
    };
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            drop(world);
            let page = render_served(&view, &shared.bulk[i]);
            let gzip = accepts_gzip(req.headers().get(ACCEPT_ENCODING));
            metrics_response(page, gzip, &view, slow)
        }
        (&Method::DELETE, "/metrics") => {
            world.delete_metrics(i);
            text(StatusCode::OK, "metrics reset\n")
        }
        (&Method::GET, "/version") => json(&version_json(&view.version)),
        (&Method::GET, "/healthz" | "/livez" | "/readyz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices") => {
            let selector = req.uri().query().and_then(label_selector);
            let matches = selector
                .as_deref()
                .is_none_or(|s| s == format!("{SERVICE_NAME_LABEL}=kubernetes"));
            let present: Vec<SocketAddr> = (0..world.instance_count())
                .filter(|j| world.view(*j).is_some_and(|v| v.presence == Presence::Up))
                .map(|j| shared.addrs[j])
                .collect();
            let list = slices(if matches { &present } else { &[] });
            match serde_json::to_vec(&list) {
                Ok(body) => json_bytes(body),
                Err(_) => status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "encoding failed",
                ),
            }
        }
        // Attribution's routes (token Secrets, the tracking ConfigMap, Pods
        // and owners): see `attribution.rs`.
        _ => match shared.attribution.route(
            req.method().as_str(),
            path,
            req.uri().query().unwrap_or(""),
            req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()),
        ) {
            Some(Reply::Json(body)) => json_bytes(body),
            Some(Reply::Error(code, reason, message)) => status(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                reason,
                &message,
            ),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ),
        },
    }
}

/// Answers a request for a ConfigMap or a Lease (`objects.rs`); the body
/// is read up to 3 MiB.
async fn objects_response(
    shared: &Shared,
    route: &super::objects::Route,
    req: Request<Incoming>,
) -> Response<ResBody> {
    let body = http_body_util::Limited::new(req.into_body(), 3 << 20)
        .collect()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.to_bytes()).ok())
        .filter(serde_json::Value::is_object);
    let (code, value) = shared.objects.handle(route, body);
    let mut res = json(&value);
    *res.status_mut() = code;
    res
}

/// The EndpointSlices of Service `default/kubernetes` for these addresses:
/// one slice per port, as the apiserver's reconciler would publish them.
pub(crate) fn slices(addrs: &[SocketAddr]) -> EndpointSliceList {
    let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    ports.sort();
    ports.dedup();
    let items = ports
        .iter()
        .enumerate()
        .map(|(n, port)| EndpointSlice {
            metadata: ObjectMeta {
                name: if n == 0 {
                    "kubernetes".to_string()
                } else {
                    format!("kubernetes-{port}")
                },
                namespace: "default".to_string(),
                resource_version: String::new(),
                labels: [(SERVICE_NAME_LABEL.to_string(), "kubernetes".to_string())].into(),
            },
            address_type: "IPv4".to_string(),
            endpoints: addrs
                .iter()
                .filter(|a| a.port() == *port)
                .map(|a| Endpoint {
                    addresses: vec![a.ip().to_string()],
                    conditions: EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    },
                })
                .collect(),
            ports: vec![EndpointPort {
                name: Some("https".to_string()),
                port: Some(*port),
                protocol: Some("TCP".to_string()),
            }],
        })
        .collect();
    EndpointSliceList {
        api_version: "discovery.k8s.io/v1".to_string(),
        kind: "EndpointSliceList".to_string(),
        metadata: ListMeta {
            resource_version: "1".to_string(),
        },
        items,
    }
}

fn label_selector(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let value = kv.strip_prefix("labelSelector=")?;
        Some(
            value
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%3D", "=")
                .replace("%3d", "="),
        )
    })
}

fn accepts_gzip(header: Option<&HeaderValue>) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut fields = part.split(';').map(str::trim);
        let coding = fields.next().unwrap_or("");
        let q_zero = fields.any(|f| {
            f.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
    })
}

fn metrics_response(
    page: String,
    gzip: bool,
    view: &super::world::InstanceView,
    slow: Option<Duration>,
) -> Response<ResBody> {
    let v = view.version;
    let content_type = if v.at_least(35) {
        "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let body: Vec<u8> = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(page.as_bytes());
        enc.finish().unwrap_or_default()
    } else {
        page.into_bytes()
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type);
    if gzip {
        builder = builder.header(CONTENT_ENCODING, "gzip");
    }
    if v.at_least(30) {
        builder = builder.header(
            "Process-Start-Time-Unix",
            view.start_time.as_millis().div_euclid(1000).to_string(),
        );
    }
    let body: ResBody = match slow {
        None => Full::new(Bytes::from(body)).boxed(),
        Some(total) => slow_body(body, total),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A body delivered in ten pieces spread over `total` (real time).
fn slow_body(body: Vec<u8>, total: Duration) -> ResBody {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let chunk = body.len().div_ceil(10).max(1);
        for piece in body.chunks(chunk) {
            tokio::time::sleep(total / 10).await;
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed()
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn version_json(v: &super::scenario::KubeVersion) -> serde_json::Value {
    serde_json::json!({
        "major": v.major.to_string(),
        "minor": v.minor.to_string(),
        "gitVersion": v.git_version(),
        "gitCommit": format!("{:040x}", (v.minor as u128) << 64 | v.patch as u128),
        "gitTreeState": "clean",
        "buildDate": "2025-12-17T12:32:06Z",
        "goVersion": "go1.25.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn json(value: &serde_json::Value) -> Response<ResBody> {
    json_bytes(value.to_string().into_bytes())
}

fn json_bytes(body: Vec<u8>) -> Response<ResBody> {
    let mut res = Response::new(Full::new(Bytes::from(body)).boxed());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn text(code: StatusCode, body: &'static str) -> Response<ResBody> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *res.status_mut() = code;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A Kubernetes `Status` object, the body of every apiserver error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<ResBody> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut res = json(&body);
    *res.status_mut() = code;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation_follows_accept_encoding() {
        let check = |h: Option<&str>, want: bool| {
            let v = h.map(|s| HeaderValue::from_str(s).expect("ascii"));
            assert_eq!(accepts_gzip(v.as_ref()), want, "{h:?}");
        };
        check(None, false);
        check(Some("gzip"), true);
        check(Some("identity, GZIP;q=0.5"), true);
        check(Some("gzip;q=0"), false);
        check(Some("br, zstd"), false);
        check(Some("*"), true);
    }
}
