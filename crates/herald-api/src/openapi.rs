//! The REST API as an OpenAPI 3.1 document, generated from the code: each handler's `#[utoipa::path]` (method,
//! path, parameters, body, success answers) and the wire types' schemas (herald-proto's `openapi` feature). What is
//! the same for every endpoint is added here once: the bearer token, and the `{code, message}` body of every error.
//! Served at `GET /api/v1/openapi.json`; CI fuzzes a live server against it (scripts/api-fuzz).

use crate::routes::{accounts, admin_users, blocks, conversations, export, media, messages, reports, search};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Herald's REST API. The WebSocket protocol (`GET /ws`) is described in docs/protocol.md, this \
                       API in docs/api.md. Every error answers `{code, message}` (ErrorBody); 429 and 503 may carry \
                       `Retry-After`.",
        license(name = "Apache-2.0 OR MIT")
    ),
    paths(
        accounts::register, accounts::login, accounts::refresh, accounts::logout, accounts::me, accounts::devices,
        accounts::revoke_device, accounts::find_user, accounts::user, export::export,
        blocks::list, blocks::block, blocks::unblock,
        conversations::create, conversations::list, conversations::details, conversations::rename,
        conversations::add_member, conversations::remove_member, conversations::set_role,
        messages::send, messages::history, messages::edit, messages::delete, messages::react, messages::unreact,
        messages::update_cursor, messages::cursor, messages::thread, messages::thread_replies,
        messages::mark_thread_read, search::search,
        media::create, media::append, media::info, media::media_info, media::delete, media::usage,
        media::take_down, media::block, media::blocklist, media::sweep,
        reports::create, reports::list, reports::get, reports::resolve,
        admin_users::get, admin_users::suspend, admin_users::unsuspend, admin_users::delete,
    ),
    components(schemas(herald_proto::ErrorBody, herald_proto::Direction)),
    modifiers(&Common),
    tags(
        (name = "accounts", description = "registration, sessions, devices, users, the data export"),
        (name = "conversations", description = "direct and group conversations and their members"),
        (name = "messages", description = "sending, history, edits, deletions, reactions, read positions"),
        (name = "threads", description = "replies grouped under a root message, with their own unread state"),
        (name = "search", description = "full-text search over the messages the caller can read"),
        (name = "media", description = "resumable uploads and their signed URLs"),
        (name = "blocks", description = "users the caller blocks"),
        (name = "reports", description = "reports of messages and users"),
        (name = "admin", description = "for the server's admins: reports, accounts, media"),
    )
)]
struct ApiDoc;

/// The bearer scheme, required by every operation that does not say otherwise (`security(())` opts out), and the
/// error answers every operation has.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.entry("4XX".into()).or_insert_with(|| error("refused: see `code`").into());
                responses.entry("5XX".into()).or_insert_with(|| error("internal, or unavailable for now").into());
            }
        }
    }
}

/// The document, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises"))
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::document;

    /// Every route of the API (as `routes::router` declares them) is in the document with each of its methods, and
    /// nothing else is: a handler added without its `#[utoipa::path]`, or described under another path, fails here.
    #[test]
    fn the_document_describes_every_route_of_the_api() {
        let source = include_str!("routes/mod.rs");
        let start = source.find("let api = Router::new()").expect("the API's router");
        let block = &source[start..start + source[start..].find(';').expect("the router's end")];
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let mut declared = Vec::new();
        for route in block.split(".route(").skip(1) {
            let path = route.split('"').nth(1).expect("a path");
            if path == "/openapi.json" {
                continue;
            }
            let handlers = &route[path.len() + 2..];
            for method in ["get", "post", "put", "patch", "delete"] {
                if handlers.contains(&format!("{method}(")) {
                    declared.push(format!("{} /api/v1{path}", method.to_uppercase()));
                }
            }
        }
        let mut described = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("operations").keys() {
                described.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        declared.sort();
        described.sort();
        assert!(declared.len() > 40, "the routes were not found in routes/mod.rs: {declared:?}");
        assert_eq!(declared, described);
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// Errors are described once for all: every operation answers `ErrorBody` for 4XX and 5XX, and only
    /// registration, login and refresh go without the bearer token.
    #[test]
    fn every_operation_has_its_errors_and_its_authentication() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let mut public = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                for range in ["4XX", "5XX"] {
                    let schema = &operation["responses"][range]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {range}");
                }
                if operation["security"] == serde_json::json!([{}]) {
                    public.push(format!("{method} {path}"));
                }
            }
        }
        public.sort();
        assert_eq!(public, ["post /api/v1/accounts", "post /api/v1/sessions", "post /api/v1/sessions/refresh"]);
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    }
}
