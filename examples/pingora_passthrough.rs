//! The framework's ceiling for `benches/compare`: a Pingora proxy with default settings and no
//! filters at all (no routing, no rewriting, no metrics, no audit), forwarding every request
//! to one plain HTTP upstream. Whatever the gateway costs beyond this is its own work.
//!
//! ```sh
//! cargo build --release --example pingora_passthrough
//! target/release/examples/pingora_passthrough 127.0.0.1:8080 127.0.0.1:9000
//! ```

#![allow(clippy::panic)]

use std::process::ExitCode;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = args.as_slice() else {
        eprintln!("usage: pingora_passthrough LISTEN_ADDR UPSTREAM_ADDR");
        return ExitCode::from(2);
    };
    let conf = ServerConf {
        // One worker per CPU this process may use, as the gateway sizes its pool.
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: upstream.clone(),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
