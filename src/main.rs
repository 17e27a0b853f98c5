//! The `image-gateway` command: `serve`, `check`, `explain` and `test`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use image_gateway::app::App;
use image_gateway::config::{self, Config, EmbeddedIdentity, LogFormat};
use image_gateway::explain::ClientRequest;
use image_gateway::glance::replay::Answer;
use image_gateway::golden;
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
    /// Validate the configuration and every mapping file, and run the mapping files' golden
    /// cases when their directory exists, then exit.
    Check {
        /// Configuration file [default: config/gateway.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show what a legacy call becomes: its route, the Glance calls it makes and, given Glance's
    /// answers, the dialect's answer with the mapping rule behind each field. No network.
    Explain {
        /// The client's method, e.g. GET.
        method: String,
        /// The client's path and query, e.g. '/v2.1/images/detail?status=ACTIVE'.
        path: String,
        /// A request header, 'Name: value' (repeatable).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// A file holding the request body.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// A file holding Glance's answer to the next call: a JSON body (status 200), or
        /// {"status": N, "body": ...}. Repeat for each call, in order.
        #[arg(long = "upstream-answer", value_name = "FILE")]
        answers: Vec<PathBuf>,
        /// Configuration file [default: config/gateway.toml]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON rather than text.
        #[arg(long)]
        json: bool,
    },
    /// Run the golden cases of the mapping files and print a diff for each failure.
    Test {
        /// The cases' directory [default: <mappings_dir>/tests, or mappings/tests]
        dir: Option<PathBuf>,
        /// Configuration file [default: config/gateway.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let source = source(config);
            match load(&source, true) {
                Ok((app, export)) => {
                    let served = serve(app, source);
                    // What is still buffered goes to the collector before the process exits.
                    if let Some(export) = export {
                        export.shutdown();
                    }
                    served
                }
                Err(code) => code,
            }
        }
        Command::Check { config } => {
            let source = source(config);
            let app = match load(&source, false) {
                Ok((app, _)) => app,
                Err(code) => return code,
            };
            let dir = golden::default_dir(&app.config);
            if dir.is_dir() && run_cases(&source, &dir, false) != ExitCode::SUCCESS {
                eprintln!("image-gateway: {}: golden cases fail (see above)", dir.display());
                return ExitCode::FAILURE;
            }
            println!("{}: configuration and mapping files are valid", source.path.display());
            ExitCode::SUCCESS
        }
        Command::Explain { method, path, headers, body, answers, config, json } => {
            let source = source(config);
            let request = match explain_request(method, path, &headers, body.as_deref(), &answers) {
                Ok(request) => request,
                Err(e) => {
                    eprintln!("image-gateway: {e}");
                    return ExitCode::FAILURE;
                }
            };
            explain(&source, request, json)
        }
        Command::Test { dir, config } => {
            let source = source(config);
            let dir = match dir {
                Some(dir) => dir,
                None => match Config::load(&source.path, source.explicit) {
                    Ok(config) => golden::default_dir(&config),
                    Err(e) => {
                        eprintln!("image-gateway: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            run_cases(&source, &dir, true)
        }
    }
}

fn source(config: Option<PathBuf>) -> ConfigSource {
    let explicit = config.is_some();
    ConfigSource { path: config.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH)), explicit }
}

/// The gateway the configuration describes; the error is printed.
fn load(source: &ConfigSource, serving: bool) -> Result<(App, Option<Export>), ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let mut export = None;
    let loaded = Config::load(&source.path, source.explicit).map_err(|e| e.to_string()).and_then(|c| {
        // Before the app is built, so that what building it warns of (`insecure` upstreams) is logged.
        if serving {
            export = init_logging(&c)?;
        }
        App::load(c, metrics, None).map_err(|e| e.to_string())
    });
    match loaded {
        Ok(app) => Ok((app, export)),
        Err(e) => {
            eprintln!("image-gateway: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// A runtime for the commands that run the handlers once and stop.
fn local_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("image-gateway: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// The request and Glance answers `explain` was given on its command line.
fn explain_request(
    method: String,
    target: String,
    headers: &[String],
    body: Option<&Path>,
    answers: &[PathBuf],
) -> Result<(ClientRequest, Vec<Answer>), String> {
    let headers = headers
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').ok_or_else(|| format!("header `{h}` is not 'Name: value'"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<Result<_, String>>()?;
    let body = match body {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let answers = answers
        .iter()
        .map(|path| {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let value = serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            Answer::from_json(value).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<_, String>>()?;
    Ok((ClientRequest { method: method.to_ascii_uppercase(), target, headers, body }, answers))
}

fn explain(source: &ConfigSource, (request, answers): (ClientRequest, Vec<Answer>), json: bool) -> ExitCode {
    let config = match Config::load(&source.path, source.explicit) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("image-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match local_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(image_gateway::explain::explain(&config, &request, answers)) {
        Ok(report) if json => {
            emit(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            emit(&report.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to standard output, ignoring a reader that went away (`| head`).
fn emit(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Runs the golden cases in `dir` and prints each failure (`all`: each outcome, and what no
/// case covers): failure if any case fails.
fn run_cases(source: &ConfigSource, dir: &Path, all: bool) -> ExitCode {
    let runtime = match local_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let summary = match runtime.block_on(golden::run_dir(&source.path, source.explicit, dir)) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("image-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    for case in &summary.cases {
        let route = case.route.as_deref().unwrap_or("no route");
        match &case.failure {
            None if all => {
                let _ = writeln!(out, "ok     {} ({route})", case.name);
            }
            None => {}
            Some(failure) => {
                let about = case.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                let _ = writeln!(out, "FAILED {} ({route}){about}", case.name);
                for line in failure.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    for dialect in &summary.skipped {
        let _ = writeln!(
            out,
            "skipped {}: the configuration serves dialect `{dialect}` nowhere",
            dir.join(dialect).display()
        );
    }
    if all {
        for route in &summary.uncovered_routes {
            let _ = writeln!(out, "no case for route {route}");
        }
        for view in &summary.uncovered_views {
            let _ = writeln!(out, "no case for view {view}");
        }
    }
    let failed = summary.failures().count();
    let _ = writeln!(out, "{} passed, {failed} failed ({})", summary.cases.len() - failed, dir.display());
    emit(&out);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
    // The certificate's watch reloads it on the runtime.
    let _entered = runtime.enter();
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
