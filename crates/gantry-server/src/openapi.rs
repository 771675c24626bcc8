//! The API's OpenAPI 3.1 document, generated from the code: the handlers'
//! `#[utoipa::path]` attributes and the resource layer's [`Resource`]
//! descriptions, registered together with the routes they document
//! ([`crate::routes::api`]), and the wire types' `ToSchema`. It is
//! committed as `openapi/gantry.json` (a test fails when the two differ)
//! and served at `GET /v1/openapi.json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use gantry_api::{
    ErrorBody, ErrorCode, ErrorDetail, Listing, ResetEvent, WATCH_RESET_EVENT, WatchEvent, WatchKind, WriteResult,
};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};
use utoipa_axum::router::UtoipaMethodRouter;

use crate::gate::{AppState, WriteOptions};
use crate::resource::Resource;

/// The document, as committed in `openapi/gantry.json`: pretty-printed,
/// keys in a stable order, with a trailing newline.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut api = crate::routes::api().into_openapi();
        // axum writes a path parameter that takes the rest of the path
        // (`/v1/kv/{*key}`) differently from OpenAPI's templates.
        let paths = std::mem::take(&mut api.paths.paths);
        api.paths.paths = paths.into_iter().map(|(path, item)| (path.replace("{*", "{"), item)).collect();
        let mut text = api.to_pretty_json().expect("the document is plain data");
        text.push('\n');
        text
    })
}

/// The API's OpenAPI 3.1 document (this one).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "server", responses(
    (status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object),
))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document()).into_response()
}

/// The document's head: what every route adds its operations to.
pub fn base() -> OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "Gantry",
            description = "The HTTP API of `gantry server`: machine and service inventories, service \
                definitions, node groups, agents' status and control documents, lookups, KV, \
                leases and resumable watches. Every answer is JSON unless said otherwise; every \
                error is a 4xx/5xx with an `ErrorBody`, and a refused request stores nothing.",
            license(name = "Apache-2.0", identifier = "Apache-2.0"),
        ),
        tags(
            (name = "inventory", description = "Machines, node groups, service definitions, instances, and the queries over them (seed 002)."),
            (name = "kv", description = "The free-form key-value space, with compare-and-set."),
            (name = "leases", description = "Leases: keys written under one disappear when it is not renewed."),
            (name = "watch", description = "Every change under a key prefix, as Server-Sent Events, resumable."),
            (name = "agents", description = "What agents publish about themselves and the control documents operators write for them."),
            (name = "scheduling", description = "Scheduled services (issue 16): allocations placed on nodes, each service's latest evaluation, and nodes' eligibility (drain)."),
            (name = "deploys", description = "Deploys (issue 17): artifacts, releases with their history, the rollout in progress, and what each node runs."),
            (name = "acl", description = "Access control: tokens (`Authorization: Bearer <secret>` on every request) and the policies they hold. Default deny."),
            (name = "server", description = "The server itself."),
        ),
        components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    )]
    struct Base;
    let mut api = <Base as utoipa::OpenApi>::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api
}

/// The error answers every operation may give.
#[derive(Debug)]
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        let error = |description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name()))).build();
            RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
        };
        BTreeMap::from([
            (
                "4XX".to_owned(),
                error(
                    "The request is refused: the error's code says why. Nothing was stored. Over a limit of \
                     its token (or client address): 429 `too_many_requests` (with `Retry-After`, in \
                     seconds) or `limit_exceeded`, or 413 `quota_exceeded`.",
                ),
            ),
            ("5XX".to_owned(), error("The server, its store or an agent could not answer.")),
        ])
    }
}

/// What a watch streams (`text/event-stream`), one event at a time.
#[derive(Debug)]
pub struct WatchStream;

impl PartialSchema for WatchStream {
    fn schema() -> RefOr<Schema> {
        let id = ObjectBuilder::new().schema_type(Type::String).description(Some(
            "`REVISION.INDEX` of a change: send it back as `Last-Event-ID` to resume after it. \
             Absent on a `reset`.",
        ));
        let event = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([WATCH_RESET_EVENT]))
            .description(Some("Absent for a change; `reset` when the watcher must re-read (the stream then ends)."));
        let data = OneOfBuilder::new()
            .item(Ref::from_schema_name(WatchEvent::name()))
            .item(Ref::from_schema_name(ResetEvent::name()))
            .description(Some("One line of JSON: a `WatchEvent`, or after `event: reset` a `ResetEvent`."));
        ObjectBuilder::new()
            .description(Some(
                "One Server-Sent Event (`id:`, `event:` and `data:` lines, then a blank line). \
                 A comment line (`:`) is sent every 15 s while nothing changes.",
            ))
            .property("id", id)
            .property("event", event)
            .property("data", data)
            .required("data")
            .into()
    }
}

impl ToSchema for WatchStream {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schema_of::<WatchEvent>(schemas);
        schema_of::<WatchKind>(schemas);
        schema_of::<ResetEvent>(schemas);
    }
}

/// `T` and every schema it refers to, for the document's components.
fn schema_of<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The operations the resource layer serves for every [`Resource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Get,
    Put,
    Delete,
}

impl Op {
    fn method(self) -> HttpMethod {
        match self {
            Op::List | Op::Get => HttpMethod::Get,
            Op::Put => HttpMethod::Put,
            Op::Delete => HttpMethod::Delete,
        }
    }
}

/// One operation of resource `R` on `path`, served by `route`: the route
/// and its documentation, as `utoipa_axum::routes!` gives them for an
/// annotated handler.
pub fn resource_operation<R: Resource>(
    path: &str,
    op: Op,
    route: axum::routing::MethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    let body = R::Body::name();
    let mut schemas = Vec::new();
    schema_of::<R::Body>(&mut schemas);
    schema_of::<WriteResult>(&mut schemas);
    let json = |schema: Ref| ContentBuilder::new().schema(Some(schema)).build();
    let snake = snake_case(&body);
    let (operation_id, summary, answer) = match op {
        Op::List => {
            let listing = format!("Listing_{body}");
            schemas.push((listing.clone(), Listing::<R::Body>::schema()));
            (format!("list_{snake}"), format!("Every {}", R::WHAT), Ref::from_schema_name(listing))
        }
        Op::Get => (format!("get_{snake}"), format!("One {}", R::WHAT), Ref::from_schema_name(body.clone())),
        Op::Put => (
            format!("put_{snake}"),
            format!("Writes one {} (stored as sent, once checked)", R::WHAT),
            Ref::from_schema_name(WriteResult::name()),
        ),
        Op::Delete => (
            format!("delete_{snake}"),
            format!("Deletes one {} (deleting what is not there is not an error)", R::WHAT),
            Ref::from_schema_name(WriteResult::name()),
        ),
    };
    let responses = ResponsesBuilder::new()
        .response("200", ResponseBuilder::new().description("Done.").content("application/json", json(answer)).build())
        .responses_from_into_responses::<Errors>()
        .build();
    let mut operation = OperationBuilder::new()
        .operation_id(Some(operation_id))
        .summary(Some(summary))
        .tag(R::TAG)
        .responses(responses);
    for (name, what) in path_params(path).zip(R::IDS) {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!("The {what}'s id: one key segment (no `/`).")))
                .schema(Some(String::schema())),
        );
    }
    if op == Op::Put {
        for parameter in WriteOptions::into_params(|| Some(ParameterIn::Query)) {
            operation = operation.parameter(parameter);
        }
        let request = RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content("application/json", json(Ref::from_schema_name(body.clone())))
            .build();
        operation = operation.request_body(Some(request));
    }
    let mut paths = Paths::new();
    paths.add_path_operation(path, vec![op.method()], operation.build());
    (schemas, paths, route)
}

/// The ids a route's path template names (`{machine}`), in order.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// `ServiceDefinition` -> `service_definition`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
