//! One route: how it is served (method, path, handler) and how it is documented
//! (what it takes and answers, as schemas of the types its handler uses). The
//! router and the OpenAPI document are both built from the same list of these, so
//! a route cannot be served undocumented, nor documented and not served.

use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::AppState;

/// Adds a type's schema to the generator and returns a reference to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a route answers when it succeeds.
#[derive(Clone, Copy)]
pub enum Reply {
    /// JSON of this type.
    Json(SchemaFn),
    /// Other content (`text/event-stream`, `text/plain`, …), described in words.
    Text {
        content_type: &'static str,
        description: &'static str,
    },
}

/// A route's documentation.
#[derive(Clone)]
pub struct Doc {
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: Option<&'static str>,
    /// The type the query string decodes into.
    pub query: Option<SchemaFn>,
    /// The type the body decodes into, and whether the body may be left out.
    pub body: Option<(SchemaFn, bool)>,
    pub reply: Reply,
    /// Statuses other than 200 that answer with a reply (not an error envelope),
    /// such as health's 503.
    pub other_replies: Vec<(StatusCode, SchemaFn)>,
    /// Error statuses beyond those every route may answer (see
    /// [`Route::error_statuses`]).
    pub errors: Vec<StatusCode>,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub doc: Doc,
    handler: MethodRouter<AppState>,
}

impl Route {
    /// A route answering `method` on `path` (axum's syntax, `{id}` for a parameter,
    /// which is OpenAPI's too) with `handler`, documented as `operation_id`.
    pub fn new<H, T>(
        method: Method,
        path: &'static str,
        handler: H,
        operation_id: &'static str,
        summary: &'static str,
    ) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|e| panic!("{method} cannot be routed: {e}"));
        Route {
            method,
            path,
            handler: on(filter, handler),
            doc: Doc {
                operation_id,
                tag: "",
                summary,
                description: None,
                query: None,
                body: None,
                reply: Reply::Text {
                    content_type: "text/plain",
                    description: "",
                },
                other_replies: Vec::new(),
                errors: Vec::new(),
            },
        }
    }

    /// The area the document groups the route under.
    pub fn tag(mut self, tag: &'static str) -> Route {
        self.doc.tag = tag;
        self
    }

    pub fn describe(mut self, description: &'static str) -> Route {
        self.doc.description = Some(description);
        self
    }

    pub fn query<T: JsonSchema>(mut self) -> Route {
        self.doc.query = Some(schema_of::<T>);
        self
    }

    pub fn body<T: JsonSchema>(mut self) -> Route {
        self.doc.body = Some((schema_of::<T>, false));
        self
    }

    /// A body that may be left out (empty).
    pub fn optional_body<T: JsonSchema>(mut self) -> Route {
        self.doc.body = Some((schema_of::<T>, true));
        self
    }

    pub fn reply<T: JsonSchema>(mut self) -> Route {
        self.doc.reply = Reply::Json(schema_of::<T>);
        self
    }

    pub fn text(mut self, content_type: &'static str, description: &'static str) -> Route {
        self.doc.reply = Reply::Text {
            content_type,
            description,
        };
        self
    }

    /// `status` also answers with a `T` (not an error envelope).
    pub fn also<T: JsonSchema>(mut self, status: StatusCode) -> Route {
        self.doc.other_replies.push((status, schema_of::<T>));
        self
    }

    /// Error statuses this route answers beyond the usual ones.
    pub fn errors(mut self, statuses: &[StatusCode]) -> Route {
        self.doc.errors.extend_from_slice(statuses);
        self
    }

    /// The path's parameter names (`{id}` → `id`).
    pub fn path_params(&self) -> Vec<&'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect()
    }

    /// Every error status the route may answer with an envelope: 400 for bad input
    /// (a path id, query or body), 404 for a named thing that does not exist, 413
    /// and 415 for a body too large or not JSON, 500 and 503 always, and the
    /// route's own.
    pub fn error_statuses(&self) -> Vec<StatusCode> {
        let mut statuses = Vec::new();
        let params = !self.path_params().is_empty();
        if params || self.doc.query.is_some() || self.doc.body.is_some() {
            statuses.push(StatusCode::BAD_REQUEST);
        }
        if params {
            statuses.push(StatusCode::NOT_FOUND);
        }
        if self.doc.body.is_some() {
            statuses.push(StatusCode::PAYLOAD_TOO_LARGE);
            statuses.push(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        statuses.push(StatusCode::INTERNAL_SERVER_ERROR);
        statuses.push(StatusCode::SERVICE_UNAVAILABLE);
        statuses.extend(self.doc.errors.iter().copied());
        let replied: Vec<StatusCode> = self.doc.other_replies.iter().map(|(s, _)| *s).collect();
        statuses.retain(|s| !replied.contains(s));
        statuses.sort_unstable();
        statuses.dedup();
        statuses
    }

    pub fn into_handler(self) -> MethodRouter<AppState> {
        self.handler
    }
}
