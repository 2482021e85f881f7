//! The `donjon` binary: parse the flags and configuration, open the store, serve.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use donjon::config::{Cli, Settings};
use donjon::{server, stack, FsStore, Registry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::load(&cli, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("donjon: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if cli.dry_run {
        print!("{}", settings.to_yaml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    let store = FsStore::open(&settings.data_dir).await?;
    let registry = Registry::builder(Arc::new(store))
        .delete_enabled(settings.delete_enabled)
        .max_manifest_size(settings.max_manifest_size)
        .catalog_max_entries(settings.catalog_max_entries)
        .build();
    let listener = server::bind(settings.bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        data_dir = %settings.data_dir.display(),
        tls = tls.is_some(),
        "donjon {} serving", env!("CARGO_PKG_VERSION")
    );
    server::serve(listener, tls, stack::wrap(registry), server::shutdown_signal(), settings.drain_timeout)
        .await?;
    tracing::info!("stopped");
    Ok(())
}
