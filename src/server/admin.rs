//! The admin listener: `GET /healthz` (liveness), `GET /metrics` (Prometheus text format),
//! `GET /status` (JSON) and `GET /` (HTML status page; see [`crate::server::status`]), and
//! `GET /reload/plan` (what reloading the config file on disk would change, without applying
//! it; `slapenir check --admin` prints it, asking through [`reload_plan`]). Keep it on loopback or
//! an operators-only network, never on the agents' network; only `/` and `/status` are meant to
//! be published (through the tunnel).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::upstreams::peer::HttpPeer;

/// The admin HTTP application.
pub struct Admin {
    /// The running configuration file, when there is one (not for the embedded default).
    pub reload: Option<std::sync::Arc<crate::server::reload::ConfigReload>>,
    /// The running policy.
    pub policy: std::sync::Arc<arc_swap::ArcSwap<crate::policy::Policy>>,
    /// The TLS listeners (for certificate expiry).
    pub tls: Vec<std::sync::Arc<crate::connect::tls::ListenerTlsState>>,
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let body = body.as_bytes().to_vec();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri.path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/status" => {
                let snap = crate::server::status::snapshot(&self.policy.load(), &self.tls);
                let mut resp = text(StatusCode::OK, &format!("{snap:#}\n"));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                resp
            }
            "/" => {
                let snap = crate::server::status::snapshot(&self.policy.load(), &self.tls);
                let mut resp = text(StatusCode::OK, &crate::server::status::html(&snap));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                resp.headers_mut().insert(
                    "content-security-policy",
                    http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                );
                resp
            }
            "/reload/plan" => match &self.reload {
                None => text(
                    StatusCode::NOT_FOUND,
                    "this gateway runs the embedded default: there is no file to reload\n",
                ),
                Some(r) => {
                    let r = r.clone();
                    match tokio::task::spawn_blocking(move || r.plan()).await {
                        Ok(Ok(plan)) => text(StatusCode::OK, &format!("{plan}\n")),
                        Ok(Err(errors)) => {
                            text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{errors}\n"))
                        }
                        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "plan failed\n"),
                    }
                }
            },
            "/metrics" => {
                let mut resp = text(StatusCode::OK, &crate::metrics::render());
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// The most of a reload plan `reload_plan` reads: a plan lists names and numbers, far less.
const MAX_PLAN_BYTES: usize = 1 << 20;

/// Asks a running gateway's admin endpoint what reloading its file would apply
/// (`GET /reload/plan`, for `slapenir check --admin`), with Pingora's own HTTP client: the
/// plan's text, or the gateway's answer (or why it could not be reached) as the error.
///
/// # Errors
/// The admin endpoint cannot be reached within 5 s, does not answer within 30 s, or answers
/// other than `200` (its body is the error).
pub fn reload_plan(admin: SocketAddr) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(fetch_plan(admin))
}

async fn fetch_plan(admin: SocketAddr) -> Result<String, String> {
    let failed = |e: Box<pingora::Error>| format!("{admin}: {e}");
    let mut peer = HttpPeer::new(admin, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    let (mut http, _) = Connector::new(None)
        .get_http_session(&peer)
        .await
        .map_err(failed)?;
    let mut req = RequestHeader::build("GET", b"/reload/plan", None).map_err(failed)?;
    req.insert_header(http::header::HOST, admin.to_string())
        .map_err(failed)?;
    http.write_request_header(Box::new(req))
        .await
        .map_err(failed)?;
    http.finish_request_body().await.map_err(failed)?;
    http.read_response_header().await.map_err(failed)?;
    let ok = http.response_header().is_some_and(|h| h.status == 200);
    let mut body = Vec::new();
    while let Some(chunk) = http.read_response_body().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_PLAN_BYTES {
            return Err(format!("{admin}: the plan is over {MAX_PLAN_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}
