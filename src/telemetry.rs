//! Export of the gateway's spans to an OpenTelemetry collector over OTLP/HTTP (protobuf), when
//! `tracing.otlp_endpoint` is set.
//!
//! The spans are the request spans of the edge and the upstream calls' spans
//! ([`crate::layers::trace`]), whose ids were made by the gateway and already sent upstream: a
//! layer of this module hands each one, when it closes, to the OpenTelemetry SDK with those very
//! ids, so that Glance's spans hang below the gateway's in the collector. (tracing-opentelemetry's
//! layer would make ids of its own when a span starts.) Only sampled traces are exported: a new
//! trace is sampled when export is on, a client's trace as its `traceparent` says.
//!
//! The SDK's batch processor exports from a thread of its own; its HTTP requests run on a
//! one-thread runtime of their own too, so export never takes time from serving.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use opentelemetry::trace::{Span as _, TraceState, TracerProvider as _};
use opentelemetry::trace::{SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use url::Url;

/// Why export cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the OTLP export: {0}")]
    Start(String),
}

/// The export pipeline; [`Export::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Sends the spans still buffered, then stops (at exit: spans of the last seconds would be lost).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("OTLP export did not shut down cleanly: {e}");
        }
    }
}

/// A layer that exports the gateway's spans to the collector at `endpoint` (its OTLP/HTTP base),
/// and the pipeline behind it. Filter it to [`is_exported`] spans.
pub fn otlp(endpoint: &Url) -> Result<(SpanLayer, Export), ExportError> {
    let client = OtlpClient::new().map_err(ExportError::Start)?;
    let mut traces = endpoint.clone();
    traces.set_path(&format!("{}/v1/traces", endpoint.path().trim_end_matches('/')));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces.as_str())
        .build()
        .map_err(|e| ExportError::Start(e.to_string()))?;
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "image-gateway"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("image-gateway");
    Ok((SpanLayer { tracer }, Export { provider }))
}

/// Whether a span is one the gateway exports: a request's or an upstream call's, the spans
/// that carry W3C ids.
pub fn is_exported(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field("span_id").is_some() && metadata.fields().field("trace_id").is_some()
}

/// Hands the gateway's spans to the SDK as they close.
#[derive(Debug)]
pub struct SpanLayer {
    tracer: SdkTracer,
}

/// What a span said of itself, gathered until it closes.
#[derive(Default)]
struct Gathered {
    name: Option<String>,
    kind: Option<SpanKind>,
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    parent_id: Option<SpanId>,
    sampled: bool,
    start: Option<SystemTime>,
    attributes: Vec<KeyValue>,
}

impl Visit for Gathered {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "otel.name" => self.name = Some(value.to_owned()),
            "otel.kind" => self.kind = Some(if value == "server" { SpanKind::Server } else { SpanKind::Client }),
            "trace_id" => self.trace_id = TraceId::from_hex(value).ok(),
            "span_id" => self.span_id = SpanId::from_hex(value).ok(),
            "parent_id" => self.parent_id = SpanId::from_hex(value).ok(),
            name => self.attributes.push(KeyValue::new(name, value.to_owned())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "sampled" => self.sampled = value,
            name => self.attributes.push(KeyValue::new(name, value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.attributes.push(KeyValue::new(field.name(), i64::try_from(value).unwrap_or(i64::MAX)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here: their debug form is their display form.
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut gathered = Gathered { start: Some(SystemTime::now()), ..Gathered::default() };
        attrs.record(&mut gathered);
        span.extensions_mut().insert(gathered);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(gathered) = extensions.get_mut::<Gathered>() {
            values.record(gathered);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(g) = span.extensions_mut().remove::<Gathered>() else { return };
        let (Some(trace_id), Some(span_id), true) = (g.trace_id, g.span_id, g.sampled) else { return };
        let name = g.name.unwrap_or_else(|| span.name().to_owned());
        // The parent may be another service's (a client's span): remote to the SDK either way.
        let parent = match g.parent_id {
            Some(parent) => {
                let parent = SpanContext::new(trace_id, parent, TraceFlags::SAMPLED, true, TraceState::default());
                Context::new().with_remote_span_context(parent)
            }
            None => Context::new(),
        };
        let builder = SpanBuilder {
            trace_id: Some(trace_id),
            span_id: Some(span_id),
            span_kind: g.kind,
            name: Cow::Owned(name),
            start_time: g.start,
            attributes: Some(g.attributes),
            ..SpanBuilder::from_name("")
        };
        builder.start_with_context(&self.tracer, &parent).end();
    }
}

/// The exporter's HTTP client: reqwest, as the gateway's other clients, on a runtime of its own
/// (the SDK exports from a thread that runs no tokio runtime).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl OtlpClient {
    fn new() -> Result<Self, String> {
        let tls = crate::tls::client::ClientTls::new("otlp", &Default::default()).map_err(|e| e.to_string())?;
        let client = tls.reqwest().timeout(std::time::Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OtlpClient { client, runtime })
    }
}

impl HttpClient for OtlpClient {
    // `#[async_trait]`'s form, written out.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        Box::pin(async move { sent.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}
