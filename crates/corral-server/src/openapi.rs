//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! The committed snapshot (`openapi.json` at the repository root) is checked
//! against this by a test, so an API change is always a visible diff.

use utoipa::OpenApi;

use corral_types::meta::{Check, Health, Ready};
use corral_types::{ErrorCode, FieldError, Problem};

use crate::routes::meta;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Corral API",
        description = "Run untrusted code: sandboxes, executions, a code library and more.\n\nErrors are `application/problem+json` (RFC 9457) with a stable `code`; branch on it, never on `title` or `detail`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(meta::health, meta::ready, meta::metrics),
    components(schemas(Problem, ErrorCode, FieldError, Health, Ready, Check)),
    tags((name = "meta", description = "Liveness, readiness and metrics")),
)]
struct ApiDoc;

/// The API description served at `/openapi.json`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The API description as pretty JSON, as committed in `openapi.json`.
pub fn api_doc_json() -> String {
    let mut json = api_doc()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}
