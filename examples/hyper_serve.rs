//! Serves donjon with plain hyper-util, without the `donjon` binary's server module: the
//! registry is an ordinary tower service.
//!
//! ```text
//! cargo run --example hyper_serve -- 127.0.0.1:5000 ./data
//! ```

use std::sync::Arc;

use donjon::{FsStore, Registry};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5000".into());
    let data = args.next().unwrap_or_else(|| "./data".into());
    let registry = Registry::builder(Arc::new(FsStore::open(data).await?)).build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = TowerToHyperService::new(registry.clone());
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                eprintln!("connection: {e}");
            }
        });
    }
}
