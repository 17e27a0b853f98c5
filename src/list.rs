//! Translated list answers, written page by page as Glance's pages come.
//!
//! Each Glance page is read raw and each image rendered into the answer as it is read
//! ([`crate::mapping::for_each_object`]). The first page is rendered before the answer's head
//! is sent, so a Glance that fails at once gets the dialect's own error, and a list that fits
//! in one page (the usual case) is answered whole, with its length. A longer list streams: each
//! later page is fetched once the client has taken the one before, and a failure then cuts the
//! answer short, so the client sees an incomplete body, never a complete-looking wrong one.
//! Whatever the list's length, a request holds one raw page and one page of answer, and its
//! admission place until the server has taken all but the last frame of it ([`Framed`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue};
use http_body::{Frame, SizeHint};

use crate::admission::Ticket;
use crate::glance::{ListError, Listing};
use crate::mapping::{LinkBases, Node, PropertyNames, RawObject, RenderError, View, ViewContext};

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
    /// The view each image is rendered with.
    pub view: Arc<View>,
    pub links: LinkBases,
    pub base_properties: Arc<PropertyNames>,
    pub tail: Tail,
    /// A filter applied here, for one Glance cannot apply; `None`: every image listed is kept.
    pub keep: Option<Keep>,
}

/// Which images Glance lists the answer keeps, and how many at most. Glance's listing then
/// has no limit of its own: it is walked until `limit` images are kept or it ends.
pub struct Keep {
    pub test: Box<dyn Fn(&RawObject<'_>) -> bool + Send + Sync>,
    pub limit: Option<usize>,
}

impl Shape {
    /// Fetches the next page and renders its images onto `out`.
    async fn page(
        &self,
        listing: &mut Listing,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<(), ListError<RenderError>> {
        let view = &self.view;
        let ctx = ViewContext { links: &self.links, base_properties: &self.base_properties };
        let keep = self.keep.as_ref();
        let full = |count: usize| keep.and_then(|k| k.limit).is_some_and(|limit| count >= limit);
        let summary = listing
            .next_page(|image| {
                if keep.is_some_and(|k| !(k.test)(image)) || full(progress.count) {
                    return Ok(());
                }
                view.append_to(Node::Object(image), &ctx, out, &mut progress.count)
            })
            .await?;
        if let Some(last) = summary.and_then(|s| s.last_id) {
            progress.last_id = Some(last);
        }
        if full(progress.count) {
            listing.stop();
        }
        Ok(())
    }
}

/// Answers `{"images": [...] <tail>}` from `listing`. `ticket` (an admission ticket) is kept
/// until the answer's last frame is handed to the server (see [`Framed`]) or the client goes.
pub async fn respond(mut listing: Listing, shape: Shape, ticket: Ticket) -> Result<Response, ListError<RenderError>> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(br#"{"images":["#);
    let mut progress = Progress::default();
    shape.page(&mut listing, &mut out, &mut progress).await?;
    if listing.is_done() {
        finish(shape, &progress, &mut out);
        return Ok(json(Framed { rest: Bytes::from(out), more: None, _ticket: ticket }));
    }
    let rest = futures_util::stream::unfold(Some((listing, shape, progress)), |state| async move {
        let (mut listing, shape, mut progress) = state?;
        let mut out = Vec::new();
        if let Err(e) = shape.page(&mut listing, &mut out, &mut progress).await {
            tracing::warn!(error = %e, images = progress.count, "list answer cut short");
            return Some((Err(e), None));
        }
        if listing.is_done() {
            finish(shape, &progress, &mut out);
            return Some((Ok(Bytes::from(out)), None));
        }
        Some((Ok(Bytes::from(out)), Some((listing, shape, progress))))
    });
    Ok(json(Framed { rest: Bytes::from(out), more: Some(Box::pin(rest)), _ticket: ticket }))
}

fn finish(shape: Shape, progress: &Progress, out: &mut Vec<u8>) {
    out.push(b']');
    (shape.tail)(progress, out);
    out.push(b'}');
}

fn json(body: Framed) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::new(body)).into_response()
}

/// Largest frame a list answer hands the server at a time.
const FRAME: usize = 64 << 10;

/// Later pages of a streamed answer.
type Pages = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, ListError<RenderError>>> + Send>>;

/// A list answer, handed to the server a frame at a time. hyper takes a frame only when its
/// write buffer has room, and drops the body once it has the last one: the admission ticket
/// held here then covers all of an answer but its last frame and what hyper buffers (some
/// 400 KiB), however slowly the client reads (and `server.send_timeout_secs` cuts off one that
/// stops reading).
struct Framed {
    /// What is left of the page being sent.
    rest: Bytes,
    /// The pages still to come, for a list longer than one Glance page.
    more: Option<Pages>,
    _ticket: Ticket,
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = ListError<RenderError>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if !self.rest.is_empty() {
                let take = self.rest.len().min(FRAME);
                return Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(take)))));
            }
            let Some(more) = self.more.as_mut() else { return Poll::Ready(None) };
            match ready!(more.as_mut().poll_next(cx)) {
                Some(Ok(page)) => self.rest = page,
                Some(Err(e)) => {
                    self.more = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => self.more = None,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.more.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.more {
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(self.rest.len() as u64),
        }
    }
}
