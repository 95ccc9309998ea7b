//! The OpenAPI document and the offline documentation pages.

use corral_store::Backend;

use crate::support::TestApp;

fn snapshot_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
}

/// The committed `openapi.json` must equal what the code generates. Run with
/// `CORRAL_UPDATE_OPENAPI=1` to rewrite it after an intended API change.
#[test]
fn committed_openapi_snapshot_is_current() {
    let generated = corral_server::openapi::api_doc_json();
    let path = snapshot_path();
    if std::env::var_os("CORRAL_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is out of date; run `make openapi` (CORRAL_UPDATE_OPENAPI=1 cargo test -p corral-server committed_openapi) and commit it"
    );
}

#[tokio::test]
async fn openapi_json_is_3_1_and_describes_the_routes_and_problem_schema() {
    let app = TestApp::new(Backend::Sqlite).await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status, 200);
    let doc = res.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Corral API");
    for path in ["/health", "/ready", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let codes = &doc["components"]["schemas"]["ErrorCode"];
    let text = codes.to_string();
    for code in corral_types::ErrorCode::ALL {
        assert!(
            text.contains(code.as_str()),
            "ErrorCode schema lacks {code}"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn swagger_ui_and_redoc_are_served_from_the_binary() {
    let app = TestApp::new(Backend::Sqlite).await;

    let docs = app.get("/docs/").await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = docs.text();
    assert!(
        !html.contains("https://"),
        "swagger page must not load remote assets"
    );

    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, 200);
    assert!(init.text().contains("/openapi.json"));
    assert_eq!(app.get("/docs/swagger-ui-bundle.js").await.status, 200);

    let redoc = app.get("/redoc").await;
    assert_eq!(redoc.status, 200);
    let page = redoc.text();
    assert!(page.contains(r#"spec-url="/openapi.json""#));
    assert!(
        !page.contains("https://"),
        "redoc page must not load remote assets"
    );
    let js = app.get("/redoc/redoc.standalone.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.body.len() > 100_000);
}
