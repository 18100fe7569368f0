//! The admin listener: `GET /healthz` (liveness), `GET /metrics` (Prometheus text format),
//! `GET /status` (JSON) and `GET /` (HTML status page; see [`crate::server::status`]), and
//! `GET /reload/plan` (what reloading the config file on disk would change, without applying
//! it; `slapenir check --admin` prints it). Keep it on loopback or an operators-only network;
//! only `/` and `/status` are meant to be published (through the tunnel). Keep it on loopback or an operators-only
//! network: it is never on the agents' network.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

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
