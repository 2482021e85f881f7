//! Mounts donjon inside an axum application, next to the application's own routes, with the
//! registry behind credentials while the app's routes stay public.
//!
//! `nest_service` strips the prefix, which the registry needs, so the registry is routed with
//! `route_service` on `/v2/` and `/v2/{*rest}`; everything else stays the app's. The auth layer
//! is built in code, without YAML: one user, Distribution's rules (a logged-in user may do
//! anything), tokens signed with a key kept in the data directory. A small middleware hands the
//! registry each request's peer address, which its failed-login limiter counts by.
//!
//! ```text
//! DONJON_USER=admin DONJON_PASSWORD=secret cargo run --example axum_mount -- 127.0.0.1:3000 ./data
//! curl http://127.0.0.1:3000/hello                  # the app: public
//! curl -i http://127.0.0.1:3000/v2/                 # the registry: 401 and a Bearer challenge
//! curl -u admin:secret http://127.0.0.1:3000/v2/    # 200
//! ```
//!
//! Without `DONJON_USER` the registry is open, as a registry without auth is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::{routing::get, Router};
use donjon::auth::{rules::Rules, token::SigningKey, token::Tokens, users::Users};
use donjon::core::ClientConn;
use donjon::{AuthLayer, FsStore, Registry};

/// The application: its own routes plus the registry, behind `auth` when given.
pub fn app(store: Arc<dyn donjon::Store>, auth: Option<AuthLayer>) -> Router {
    let mut builder = Registry::builder(store);
    if let Some(auth) = auth {
        builder = builder.auth(auth);
    }
    let registry = builder.build();
    Router::new()
        .route("/hello", get(|| async { "hello from the app" }))
        .route_service("/v2", registry.clone())
        .route_service("/v2/", registry.clone())
        .route_service("/v2/{*rest}", registry)
}

/// An auth layer for one user, signing with the key `store` keeps.
pub async fn one_user(store: &dyn donjon::Store, user: &str, password: &str) -> Result<AuthLayer, String> {
    let key = SigningKey::shared(store).await?;
    let tokens = Tokens::new(key, "donjon", "axum-example", Duration::from_secs(300));
    Ok(AuthLayer::new(
        Users::new(None, Some((user, password)))?,
        Rules::authenticated_may_do_anything(),
        tokens,
    ))
}

/// Puts the connection's peer on the request, for the registry's failed-login limiter.
pub async fn client_conn(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> axum::response::Response {
    req.extensions_mut().insert(ClientConn { peer, tls: false, local: None });
    next.run(req).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let data = std::path::PathBuf::from(args.next().unwrap_or_else(|| "./data".into()));
    let store: Arc<dyn donjon::Store> = Arc::new(FsStore::open(&data).await?);
    let auth = match (std::env::var("DONJON_USER"), std::env::var("DONJON_PASSWORD")) {
        (Ok(u), Ok(p)) => Some(one_user(&*store, &u, &p).await.map_err(std::io::Error::other)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = app(store, auth).layer(middleware::from_fn(client_conn));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}
