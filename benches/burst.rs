//! A burst of clients, each asking for the same URL again and again as soon as it has an
//! answer (after the `Retry-After` of a 503, as a well-behaved client waits): what
//! `bench/run.sh` uses to load the gateway with 256 concurrent list requests.
//!
//! Prints one JSON object: for each status, the count and latency percentiles; how many 503s
//! carried `Retry-After`; transport errors; bytes read. Latencies of refusals and of served
//! answers are kept apart, since a 503 at once and a 1 MB answer are not comparable.
//!
//! `cargo bench --bench burst -- URL [CLIENTS] [SECONDS] [HEADER: VALUE]...`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<u16, Vec<Duration>>,
    retry_after: usize,
    errors: BTreeMap<String, usize>,
    bytes: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (status, mut l) in other.latencies {
            self.latencies.entry(status).or_default().append(&mut l);
        }
        self.retry_after += other.retry_after;
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
        self.bytes += other.bytes;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let Some(url) = args.first().cloned() else {
        eprintln!("usage: burst URL [CLIENTS] [SECONDS] [HEADER: VALUE]...");
        std::process::exit(2);
    };
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let secs: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20.0);
    let mut headers = HeaderMap::new();
    for h in args.iter().skip(3) {
        let (name, value) = h.split_once(':').expect("HEADER: VALUE");
        headers.insert(name.trim().parse::<HeaderName>().unwrap(), HeaderValue::from_str(value.trim()).unwrap());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let tally = runtime.block_on(burst(url, clients, Duration::from_secs_f64(secs), headers));
    let total: usize = tally.latencies.values().map(Vec::len).sum();
    let mut statuses = serde_json::Map::new();
    for (status, mut l) in tally.latencies {
        l.sort();
        let pct = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
        statuses.insert(
            status.to_string(),
            serde_json::json!({"count": l.len(), "p50_us": pct(0.5), "p99_us": pct(0.99), "max_us": pct(1.0)}),
        );
    }
    let out = serde_json::json!({
        "clients": clients,
        "seconds": secs,
        "answers": total,
        "statuses": statuses,
        "retry_after_503": tally.retry_after,
        "errors": tally.errors,
        "bytes": tally.bytes,
    });
    println!("{out}");
}

async fn burst(url: String, clients: usize, length: Duration, headers: HeaderMap) -> Tally {
    image_gateway::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(120))
        .default_headers(headers)
        .build()
        .unwrap();
    let until = Instant::now() + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let started = Instant::now();
                    match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry = response
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                            match response.bytes().await {
                                Ok(body) => {
                                    tally.bytes += body.len() as u64;
                                    tally.latencies.entry(status).or_default().push(started.elapsed());
                                    if let (503, Some(secs)) = (status, retry) {
                                        tally.retry_after += 1;
                                        tokio::time::sleep(Duration::from_secs(secs)).await;
                                    }
                                }
                                Err(e) => *tally.errors.entry(format!("body: {e}")).or_default() += 1,
                            }
                        }
                        Err(e) => *tally.errors.entry(format!("request: {e}")).or_default() += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.unwrap());
    }
    all
}
