//! The `donjon` binary: parse the flags and configuration, open the store, serve.

use clap::Parser;
use donjon::config::{Cli, Command, LogFormat, Logging, Settings};
use donjon::{middleware, server, ReadOnlySwitch, Registry};
use donjon_core::config::LayerConfig as _;
use donjon_store::Backend;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = &cli.command {
        // `ls`, `inspect`, `rm`: a client of any registry, which reads no registry
        // configuration (a broken one must not stop it) and sets up no logging.
        if let Some(code) = client_command(command) {
            return code;
        }
    }
    if let Some(Command::GarbageCollect { config: Some(c), .. } | Command::Serve { config: Some(c) }) =
        &cli.command
    {
        cli.config_file = Some(c.clone());
    }
    let settings = match Settings::load(&cli, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("donjon: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck { timeout }) = &cli.command {
        // Before the logging: a health command run every 30 s repeats no warnings.
        return healthcheck(&settings, *timeout);
    }
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
    if let Some(Command::CheckImage { images }) = &cli.command {
        return check_images(&settings, images);
    }
    if let Some(Command::GarbageCollect { dry_run, delete_untagged, grace, settle, .. }) = &cli.command {
        let mut o = settings.storage.maintenance.gc.options();
        o.dry_run |= *dry_run;
        o.delete_untagged |= *delete_untagged;
        o.grace = grace.unwrap_or(o.grace);
        o.settle = settle.unwrap_or(o.settle);
        return garbage_collect(&settings, &o);
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
    match runtime.block_on(run(settings, cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("donjon: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, cli: Cli) -> std::io::Result<()> {
    let tls = settings.tls.as_ref().map(|t| server::tls_acceptor(&t.cert, &t.key)).transpose()?;
    let store = settings.storage.open(&settings.data_dir).await?;
    let cx = settings.build_context(store.clone());
    let built = async {
        Ok::<_, donjon_core::config::ConfigError>(
            Registry::builder(store.clone())
                .content(settings.content.layer(&cx).await?)
                .upload(settings.upload.layer(&cx).await?)
                .auth(settings.auth.layer(&cx).await?)
                .validation(settings.validation.layer(&cx).await?)
                .browse(settings.ui.layer(&cx).await?)
                .proxy(settings.proxy.layer(&cx).await?)
                .local_names(settings.hostname.clone()),
        )
    };
    let mut builder = built.await.map_err(std::io::Error::other)?;
    let read_only = ReadOnlySwitch::new(settings.storage.maintenance.readonly.enabled);
    if read_only.is_on() {
        tracing::warn!("read-only mode (storage.maintenance.readonly): pushes and deletes are refused");
    }
    builder = builder.read_only(read_only.clone());
    // Watched before serving: a SIGHUP that came before the watch would end the process.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            tokio::spawn(reload_on_sighup(hup, cli, read_only));
        }
        Err(e) => tracing::warn!("cannot watch SIGHUP, the configuration cannot be re-read: {e}"),
    }
    if let Some(schedule) = settings.storage.gc_schedule() {
        tracing::info!(
            interval = %donjon_core::config::duration::format(schedule.interval),
            grace = %donjon_core::config::duration::format(schedule.options.grace),
            "garbage collection on a schedule"
        );
        builder = builder.garbage_collection(schedule);
    }
    // Background work the layers hand out (upload purging): it runs until the process ends.
    tokio::spawn(builder.background(settings.storage.upload_purging()));
    let registry = builder.build();
    let listener = server::bind(settings.bind).await?;
    let addr = listener.local_addr()?;
    let content = match settings.storage.backend().map_err(std::io::Error::other)? {
        Backend::Filesystem => {
            let dir = std::path::absolute(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
            format!("{}", dir.display())
        }
        Backend::S3(s3) => s3.to_string(),
    };
    let deletes = if settings.content.delete_enabled {
        "deletes on"
    } else {
        "deletes off (storage.delete.enabled: true allows them)"
    };
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        deletes = settings.content.delete_enabled,
        "donjon {} serving {content} on {}://{addr}; {deletes}",
        donjon::VERSION,
        if tls.is_some() { "https" } else { "http" },
    );
    let events = settings.notifications.layer(&cx).await.map_err(std::io::Error::other)?;
    let svc = middleware::wrap_with(
        registry,
        settings.headers.clone(),
        settings.metrics.on_main_listener(),
        events,
    );
    let options = settings.connections.clone();
    if let (true, Some(debug)) = (settings.metrics.enabled, settings.metrics.addr) {
        // Distribution's `http.debug.addr`: the metrics (and health) there, not on the main listener.
        let listener = server::bind(debug).await?;
        tracing::info!(addr = %listener.local_addr()?, path = %settings.metrics.path, "metrics served apart");
        let metrics = middleware::wrap_with(donjon::NotFound, vec![], Some(&settings.metrics.path), None);
        let options = options.clone();
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, None, metrics, server::shutdown_signal(), options).await {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
    }
    tracing::debug!(connections = options.connection_limit(), "connection limit");
    server::serve(listener, tls, svc, server::shutdown_signal(), options).await?;
    tracing::info!("stopped");
    Ok(())
}

/// On `SIGHUP`, reads the configuration again and applies `storage.maintenance.readonly`
/// (what else changed needs a restart; htpasswd files are reloaded on their own).
async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, cli: Cli, read_only: ReadOnlySwitch) {
    while hup.recv().await.is_some() {
        match Settings::load(&cli, std::env::vars()) {
            Ok(s) => {
                let on = s.storage.maintenance.readonly.enabled;
                let was = read_only.set(on);
                let word = if on { "on" } else { "off" };
                if was == on {
                    tracing::info!("SIGHUP: configuration re-read; read-only mode stays {word}");
                } else {
                    tracing::warn!("SIGHUP: configuration re-read; read-only mode is now {word}");
                }
            }
            Err(e) => tracing::error!("SIGHUP: configuration not re-read, nothing changed: {e}"),
        }
    }
}

/// `donjon garbage-collect`: one collection on the configured store, printing what goes (as
/// Distribution's command does) and a summary line. Exit status 1 when it stops on an error.
fn garbage_collect(settings: &Settings, o: &donjon_store::gc::GcOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("donjon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let store = match settings.storage.open(&settings.data_dir).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("donjon: cannot open the store: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !o.dry_run {
            eprintln!(
                "donjon: collecting garbage (grace {}, settle {})",
                donjon_core::config::duration::format(o.grace),
                donjon_core::config::duration::format(o.settle)
            );
        }
        match donjon_store::gc::collect(&*store, o).await {
            Ok(r) => {
                let what = if r.dry_run { "eligible for deletion" } else { "deleted" };
                for (repo, d) in &r.manifests {
                    println!("manifest {what}: {repo}@{d}");
                }
                for (repo, d) in &r.links {
                    println!("link {what}: {repo} {d}");
                }
                for (d, size) in &r.blobs {
                    println!("blob {what}: {d} ({size} bytes)");
                }
                println!("{}", r.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("donjon: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `donjon healthcheck`: 0 when the configured address answers `/healthz` with 200.
fn healthcheck(settings: &Settings, timeout: std::time::Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("donjon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cert = settings.tls.as_ref().map(|t| t.cert.as_path());
    let mut why = Vec::new();
    for addr in donjon::healthcheck::targets(settings.bind) {
        match runtime.block_on(donjon::healthcheck::probe(addr, cert, "/healthz", timeout)) {
            Ok(200) => return ExitCode::SUCCESS,
            Ok(code) => why.push(format!("{addr} answered /healthz with {code}")),
            Err(e) => why.push(e),
        }
    }
    eprintln!("donjon: unhealthy: {}", why.join("; "));
    ExitCode::FAILURE
}

/// `donjon check-image`: the policy's decision on each image, one line each, the store
/// consulted when the policy checks local images. Exit status 1 when any is refused, 2 when
/// there is no policy to ask.
fn check_images(settings: &Settings, images: &[String]) -> ExitCode {
    let Some(config) = &settings.validation else {
        eprintln!("donjon: no image policy configured (image_validation, --image-validation-config-file or --allow-prefixes)");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("donjon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let store = if config.check_local {
            match settings.storage.open(&settings.data_dir).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("donjon: cannot open the store to look up local images: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            None
        };
        let layer = match settings.validation_layer(store) {
            Ok(Some(l)) => l,
            Ok(None) => return ExitCode::from(2),
            Err(e) => {
                eprintln!("donjon: {e}");
                return ExitCode::from(2);
            }
        };
        let width = images.iter().map(|i| i.len()).max().unwrap_or(0);
        let mut refused = false;
        for image in images {
            let d = layer.decide(image).await;
            refused |= !d.allowed;
            let verdict = if d.allowed { "allowed" } else { "refused" };
            println!("{verdict}  {image:<width$}  {}", d.reason);
        }
        if refused {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
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
    let json = log.format == LogFormat::Json;
    let writer = donjon::log_fields::WithFields::new(&log.fields, json);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal() && log.fields.is_empty()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// `ls`, `inspect`, `rm`, run by the registry client (`donjon-client`); `None` for the other
/// commands.
fn client_command(command: &Command) -> Option<ExitCode> {
    use donjon_client::{Op, Options};
    let (op, arg, c) = match command {
        Command::Ls { target, client } => (Op::Ls, target, client),
        Command::Inspect { image, client } => (Op::Inspect, image, client),
        Command::Rm { image, client } => (Op::Rm, image, client),
        _ => return None,
    };
    let options = Options {
        user: c.user.clone(),
        password: c.password.clone(),
        password_stdin: c.password_stdin,
        insecure: c.insecure,
        ca_file: c.ca_file.clone(),
        json: c.json,
    };
    Some(donjon_client::run(op, arg, options))
}
