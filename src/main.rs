//! The `donjon` binary: parse the flags and configuration, open the store, serve.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use donjon::config::{Cli, LogFormat, Logging, Settings, Storage};
use donjon::{middleware, server, FsStore, Registry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("donjon: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log);
    if let Some(n) = server::raise_nofile_limit() {
        tracing::debug!(limit = n, "open file limit");
    }
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if cli.dry_run {
        print!("{}", settings.to_yaml());
        return ExitCode::SUCCESS;
    }
    // Filesystem calls run on the blocking pool; bound it so that a burst of clients does not
    // leave hundreds of threads behind (tokio's default allows 512).
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(64).build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("donjon: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("donjon: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> std::io::Result<()> {
    let tls = settings.tls.as_ref().map(|t| server::tls_acceptor(&t.cert, &t.key)).transpose()?;
    let store: Arc<dyn donjon::Store> = match &settings.storage {
        Storage::Filesystem => Arc::new(FsStore::open(&settings.data_dir).await?),
        Storage::S3(s3) => open_s3(s3).await?,
    };
    let builder = Registry::builder(store)
        .delete_enabled(settings.delete_enabled)
        .max_manifest_size(settings.max_manifest_size)
        .catalog_max_entries(settings.catalog_max_entries)
        .index_children(settings.index_children.clone());
    // Background work the layers hand out (upload purging): it runs until the process ends.
    tokio::spawn(builder.background(settings.upload_purging.clone()));
    let registry = builder.build();
    let listener = server::bind(settings.bind).await?;
    let addr = listener.local_addr()?;
    let content = match &settings.storage {
        Storage::Filesystem => {
            let dir = std::path::absolute(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
            format!("{}", dir.display())
        }
        Storage::S3(s3) => s3.to_string(),
    };
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        "donjon {} serving {content} on {}://{addr}",
        env!("CARGO_PKG_VERSION"),
        if tls.is_some() { "https" } else { "http" },
    );
    let svc = middleware::wrap(registry, settings.headers.clone());
    let options = settings.connections.clone();
    tracing::debug!(connections = options.connection_limit(), "connection limit");
    server::serve(listener, tls, svc, server::shutdown_signal(), options).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs go to stderr: `RUST_LOG` if set, else the configured level; colour only on a terminal;
/// one JSON object a line with `log.formatter: json`.
fn init_logging(log: &Logging) {
    use std::io::IsTerminal;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    if !log.access_log {
        if let Ok(off) = "donjon::access=off".parse() {
            filter = filter.add_directive(off);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

#[cfg(feature = "s3")]
async fn open_s3(config: &donjon_store::S3Config) -> std::io::Result<Arc<dyn donjon::Store>> {
    let store = donjon_store::S3Store::connect(config.clone()).await.map_err(std::io::Error::other)?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(_: &donjon_store::S3Config) -> std::io::Result<Arc<dyn donjon::Store>> {
    Err(std::io::Error::other("this donjon was built without the `s3` feature"))
}
