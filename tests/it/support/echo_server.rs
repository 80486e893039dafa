//! A hostile HTTPS server on loopback that echoes the request's
//! `Authorization` header back: in error bodies (plain text or a Kubernetes
//! `Status` message, at an offset that moves with every request, repeated
//! past the 4 KiB an error body is read up to), in a `Content-Type` header,
//! and as a JSON string where a list belongs. Used by the scrape and
//! discovery tests, with the token checks they share.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use cutover_auditor::credentials::{MIN_TOKEN_BYTES, REDACTED_FRAGMENT_BYTES};
use cutover_auditor::simulator::tls::{ClusterCa, install_ring_provider};

/// The running server.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate (for `kubernetes` and 127.0.0.1).
    pub ca_file: PathBuf,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
}

impl EchoServer {
    /// Starts the server; the CA goes into `dir`.
    pub async fn start(dir: &Path) -> EchoServer {
        install_ring_provider();
        let ca = ClusterCa::generate().expect("CA");
        let ca_file = dir.join("echo-ca.crt");
        ca.write(&ca_file).expect("write CA");
        let config = ca
            .server_config(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(&req, n)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        EchoServer {
            addr,
            ca_file,
            requests,
        }
    }
}

fn answer(req: &Request<Incoming>, n: usize) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path();
    let mut response = Response::new(Full::new(Bytes::new()));
    if path == "/header" {
        // A 200 whose Content-Type carries the header: the detail quotes it.
        let value = format!("text/html; echo={auth}");
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_str(&value).expect("header"),
        );
        *response.body_mut() = Full::new(Bytes::from_static(b"x"));
        return response;
    }
    if path.starts_with("/apis/") && n % 2 == 1 {
        // Discovery: a string where the list of slices belongs; serde quotes it.
        let body = serde_json::json!({ "kind": "EndpointSliceList", "items": auth });
        *response.body_mut() = Full::new(Bytes::from(body.to_string()));
        return response;
    }
    // An error body echoing the header from an offset that moves with every
    // request, repeated (every fourth time past the 4 KiB read, else within
    // it, so the connection is reused): the 300-character cut and the read
    // cut both fall inside a copy of the token, somewhere.
    let mut text = "~".repeat(n % 97);
    let copy = format!("Authorization: {auth}\n");
    let size = if n % 4 < 2 { 6000 } else { 4000 };
    while text.len() + copy.len() <= size || !text.contains('A') {
        text.push_str(&copy);
    }
    if size > 4096 {
        while text.len() <= size {
            text.push_str(&copy);
        }
    }
    let body = if n.is_multiple_of(3) {
        serde_json::json!({ "kind": "Status", "message": text }).to_string()
    } else {
        text
    };
    *response.status_mut() = if n.is_multiple_of(2) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::FORBIDDEN
    };
    *response.body_mut() = Full::new(Bytes::from(body));
    response
}

/// A token of `len` bytes from the characters of a JWT, different for
/// every length.
pub fn token_of(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let mut x = (len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CHARS[(x % CHARS.len() as u64) as usize] as char
        })
        .collect()
}

/// Puts `token` into `path` as the kubelet does (a new file renamed over).
pub fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).expect("write token");
    std::fs::rename(&tmp, path).expect("rename token");
}

/// The rule: no piece of 8 bytes or more of a long token; a token of 4 to
/// 7 bytes not whole (shorter ones are refused before any request).
pub fn assert_no_token(text: &str, token: &str, context: &str) {
    assert!(token.len() >= MIN_TOKEN_BYTES);
    if token.len() < REDACTED_FRAGMENT_BYTES {
        assert!(!text.contains(token), "{context}: token left in {text:?}");
        return;
    }
    let pieces: HashSet<&[u8]> = token.as_bytes().windows(REDACTED_FRAGMENT_BYTES).collect();
    if let Some(piece) = text
        .as_bytes()
        .windows(REDACTED_FRAGMENT_BYTES)
        .find(|w| pieces.contains(w))
    {
        panic!(
            "{context}: {:?} of the token left in {text:?}",
            String::from_utf8_lossy(piece)
        );
    }
}
