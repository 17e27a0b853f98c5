//! Translated list answers, written page by page as Glance's pages come.
//!
//! Each Glance page is read raw and each image rendered into the answer as it is read
//! ([`crate::mapping::for_each_object`]). The first page is rendered before the answer's head
//! is sent, so a Glance that fails at once gets the dialect's own error, and a list that fits
//! in one page (the usual case) is answered whole, with its length. A longer list streams: each
//! later page is fetched once the client has taken the one before, and a failure then cuts the
//! answer short, so the client sees an incomplete body, never a complete-looking wrong one.
//! Whatever the list's length, a request holds one raw page and one page of answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderValue};
use http_body::{Frame, SizeHint};

use crate::admission::Ticket;
use crate::glance::{ListError, Listing};
use crate::mapping::{LinkBases, Mapping, Node, PropertyNames, RenderError, ViewContext};

/// How far an answer has got.
#[derive(Debug, Default)]
pub struct Progress {
    /// Images written.
    pub count: usize,
    /// The upstream id of the last one.
    pub last_id: Option<String>,
}

/// Writes what follows the array (e.g. `,"images_links":[...]`) once the images are all out.
pub type Tail = Box<dyn FnOnce(&Progress, &mut Vec<u8>) + Send + Sync>;

/// What a list answer is rendered with; owned, as a streamed answer outlives its handler.
pub struct Shape {
    pub mapping: Arc<Mapping>,
    /// The view each image is rendered with (checked to exist when the mapping was loaded).
    pub view: Arc<str>,
    pub links: LinkBases,
    pub base_properties: Arc<PropertyNames>,
    pub tail: Tail,
}

impl Shape {
    /// Fetches the next page and renders its images onto `out`.
    async fn page(
        &self,
        listing: &mut Listing,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<(), ListError<RenderError>> {
        let view = self.mapping.view(&self.view).ok_or_else(|| {
            ListError::Visit(RenderError { field: "route".into(), problem: format!("no view `{}`", self.view) })
        })?;
        let ctx = ViewContext { links: &self.links, base_properties: &self.base_properties };
        let summary =
            listing.next_page(|image| view.append_to(Node::Object(image), &ctx, out, &mut progress.count)).await?;
        if let Some(last) = summary.and_then(|s| s.last_id) {
            progress.last_id = Some(last);
        }
        Ok(())
    }
}

/// Answers `{"images": [...] <tail>}` from `listing`. `ticket` (an admission ticket) is kept
/// until the answer's last byte is sent or the client goes away.
pub async fn respond(mut listing: Listing, shape: Shape, ticket: Ticket) -> Result<Response, ListError<RenderError>> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(br#"{"images":["#);
    let mut progress = Progress::default();
    shape.page(&mut listing, &mut out, &mut progress).await?;
    if listing.is_done() {
        finish(shape, &progress, &mut out);
        return Ok(json(Body::new(Keep { body: http_body_util::Full::new(Bytes::from(out)), _kept: ticket })));
    }
    let first = futures_util::stream::once(std::future::ready(Ok::<_, ListError<RenderError>>(Bytes::from(out))));
    let rest = futures_util::stream::unfold(Some((listing, shape, progress, ticket)), |state| async move {
        let (mut listing, shape, mut progress, ticket) = state?;
        let mut out = Vec::new();
        if let Err(e) = shape.page(&mut listing, &mut out, &mut progress).await {
            tracing::warn!(error = %e, images = progress.count, "list answer cut short");
            return Some((Err(e), None));
        }
        if listing.is_done() {
            finish(shape, &progress, &mut out);
            return Some((Ok(Bytes::from(out)), None));
        }
        Some((Ok(Bytes::from(out)), Some((listing, shape, progress, ticket))))
    });
    Ok(json(Body::from_stream(first.chain(rest))))
}

fn finish(shape: Shape, progress: &Progress, out: &mut Vec<u8>) {
    out.push(b']');
    (shape.tail)(progress, out);
    out.push(b'}');
}

fn json(body: Body) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A body that keeps something alive (an admission ticket) until it is sent or dropped.
struct Keep<B, T> {
    body: B,
    _kept: T,
}

impl<B: http_body::Body + Unpin, T: Unpin> http_body::Body for Keep<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
