//! Mounts donjon inside an axum application, next to the application's own routes.
//!
//! `nest_service` strips the prefix, which the registry needs, so the registry is routed with
//! `route_service` on `/v2/` and `/v2/{*rest}`; everything else stays the app's.
//!
//! ```text
//! cargo run --example axum_mount -- 127.0.0.1:3000 ./data
//! curl http://127.0.0.1:3000/hello      # the app
//! curl http://127.0.0.1:3000/v2/        # the registry
//! ```

use std::sync::Arc;

use axum::{routing::get, Router};
use donjon::{FsStore, Registry};

/// The application: its own routes plus the registry.
pub fn app(store: Arc<dyn donjon::Store>) -> Router {
    let registry = Registry::builder(store).build();
    Router::new()
        .route("/hello", get(|| async { "hello from the app" }))
        .route_service("/v2", registry.clone())
        .route_service("/v2/", registry.clone())
        .route_service("/v2/{*rest}", registry)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let data = args.next().unwrap_or_else(|| "./data".into());
    let store = FsStore::open(data).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(Arc::new(store))).await
}
