//! The `image-gateway` command: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use image_gateway::app::App;
use image_gateway::config::{self, Config, EmbeddedIdentity, LogFormat};
use image_gateway::layers::metrics::Metrics;
use image_gateway::server::ConfigSource;
use image_gateway::telemetry::{self, Export};
use image_gateway::tls::server::ServerTls;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Memory freed after a burst goes back to the system: glibc keeps what a burst freed for later
/// allocations (10 s after 256 clients asked for a 1000-image list at once, 52 MiB stayed
/// resident against 11 MiB idle). Two measures, both measured by `bench/run.sh`'s burst:
///
/// - one malloc arena per core rather than glibc's eight: every arena keeps a top chunk and
///   its own fragments, and the runtime's few threads do not contend for fewer (10 s after the
///   burst: 1.04 to 1.26 times the idle figure with glibc's default, 1.10 with this);
/// - a thread that hands the free memory of every arena back to the system every
///   [`TRIM_EVERY`] (`malloc_trim` walks all arenas, whatever thread freed into them); under
///   load it costs a page fault or so per page given back and taken again, not measurable in
///   the benchmark's translation CPU. (mimalloc, used before, collects per thread only:
///   forcing it on idle threads cost 15-50% of a translation in page faults.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod memory {
    /// How often free memory is handed back to the system.
    const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// Before any thread starts.
    pub fn tune() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: `mallopt` has no preconditions; called before other threads exist.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX)) };
    }

    pub fn trim_periodically() {
        let spawned = std::thread::Builder::new().name("memory-trim".into()).spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: `malloc_trim` has no preconditions; it only returns free memory to the system.
            unsafe { libc::malloc_trim(0) };
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the memory-trim thread: memory freed after a burst stays resident: {e}");
        }
    }
}

/// Elsewhere than glibc, the allocator's own policy stands.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod memory {
    pub fn tune() {}
    pub fn trim_periodically() {}
}

#[derive(Parser)]
#[command(
    name = "image-gateway",
    version,
    about = "Serves Nova's image proxy API (and other legacy image dialects) from Glance v2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file [default: config/gateway.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and every mapping file, then exit.
    Check {
        /// Configuration file [default: config/gateway.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    let (Command::Serve { config } | Command::Check { config }) = &cli.command;
    let explicit = config.is_some();
    let path = config.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let metrics = Arc::new(Metrics::new());
    let serving = matches!(cli.command, Command::Serve { .. });
    let mut export = None;
    let loaded = Config::load(&path, explicit).map_err(|e| e.to_string()).and_then(|c| {
        // Before the app is built, so that what building it warns of (`insecure` upstreams) is logged.
        if serving {
            export = init_logging(&c)?;
        }
        App::load(c, metrics, None).map_err(|e| e.to_string())
    });
    let app = match loaded {
        Ok(app) => app,
        Err(e) => {
            eprintln!("image-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check { .. } => {
            println!("{}: configuration and mapping files are valid", path.display());
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => {
            let served = serve(app, ConfigSource { path, explicit });
            if let Some(export) = export {
                export.shutdown();
            }
            served
        }
    }
}

fn serve(app: App, source: ConfigSource) -> ExitCode {
    memory::trim_periodically();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("image-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match app.config.server.tls.as_ref().map(|tls| ServerTls::load(tls, app.metrics.clone())).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("image-gateway: {}: {e}", e.key);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(app.config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %app.config.listen, "cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mount = &app.config.glance.mount;
        match &app.config.glance.url {
            Some(url) => tracing::info!(glance = %url, "using Glance"),
            None => tracing::warn!(
                mount = %mount,
                "NO GLANCE CONFIGURED (glance.url is unset): serving from an in-memory Glance v2 store; \
                 every image is lost when the gateway stops. Its native API is at {mount}/v2/images"
            ),
        }
        if app.config.glance.url.is_none() && app.config.glance.embedded_identity == EmbeddedIdentity::Headers {
            tracing::warn!(
                "the in-memory store takes each caller's project and roles from X-Project-Id and X-Roles \
                 (glance.embedded_identity = \"headers\"): for development only; clients' own identity \
                 headers reach it only from identity_proxies"
            );
        }
        tracing::info!(
            listen = %listener.local_addr().map_or_else(|_| app.config.listen.to_string(), |a| a.to_string()),
            tls = tls.is_some(),
            "image-gateway listening"
        );
        image_gateway::server::serve(Arc::new(app), listener, tls, source).await;
        ExitCode::SUCCESS
    })
}

/// Logs to stderr, filtered by `log.filter` (or `RUST_LOG`); with `tracing.otlp_endpoint`,
/// the request and upstream spans go to the collector too, whatever the log filter.
fn init_logging(config: &Config) -> Result<Option<Export>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    match &config.tracing.otlp_endpoint {
        Some(endpoint) => {
            let (spans, export) = telemetry::otlp(endpoint).map_err(|e| e.to_string())?;
            // The log's filter is the log's alone: the spans are exported whatever it lets through.
            tracing_subscriber::registry()
                .with(log_layer(config.log.format).with_filter(filter))
                .with(spans.with_filter(filter_fn(telemetry::is_exported)))
                .init();
            Ok(Some(export))
        }
        None => {
            // A global filter costs less per event than a per-layer one.
            tracing_subscriber::registry().with(filter).with(log_layer(config.log.format)).init();
            Ok(None)
        }
    }
}

fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
        LogFormat::Text => log.boxed(),
    }
}
