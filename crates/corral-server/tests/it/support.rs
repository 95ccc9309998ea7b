//! `TestApp`: a fresh database and a fresh app per test.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use corral_core::clock::ManualClock;
use corral_server::{AppState, app_with_routes};
use corral_service::config::Config;
use corral_store::testing::TestDatabase;
use corral_store::{Backend, Store};

/// Declares one test per backend from a body taking a ready `TestApp`.
macro_rules! on_both_backends {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($app: $crate::support::TestApp) $body
            #[tokio::test]
            async fn sqlite() {
                run($crate::support::TestApp::new(corral_store::Backend::Sqlite).await).await
            }
            #[tokio::test]
            async fn postgres() {
                run($crate::support::TestApp::new(corral_store::Backend::Postgres).await).await
            }
        }
    };
}
pub(crate) use on_both_backends;

pub struct TestApp {
    pub state: AppState,
    pub clock: ManualClock,
    router: Router,
    store_config: corral_store::StoreConfig,
    config: Config,
    /// The database, dropped with the first app (replicas borrow it).
    _db: Option<TestDatabase>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json body with this status and code; returns the body.
    pub fn assert_problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["type"], format!("urn:corral:error:{code}"), "{body}");
        assert!(body["title"].is_string(), "{body}");
        let request_id = body["request_id"].as_str().expect("problem has request_id");
        assert_eq!(Some(request_id), self.header("x-request-id"), "{body}");
        body
    }
}

impl TestApp {
    pub async fn new(backend: Backend) -> TestApp {
        TestApp::builder(backend).build().await
    }

    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            config: Config::default(),
            routes: Router::new(),
        }
    }

    /// Serves the app on a loopback port, for what needs a real connection
    /// (WebSockets); the server lives as long as the test's runtime.
    pub async fn serve(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = self
            .router
            .clone()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// Sends `request` as if from 127.0.0.1 (the peer address a real
    /// connection would give; per-IP rate limits key on it).
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        self.send_from([127, 0, 0, 1], request).await
    }

    /// Sends `request` as if from `ip`.
    pub async fn send_from(&self, ip: [u8; 4], mut request: Request<Body>) -> TestResponse {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40_000,
            ))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A second server on the same database (as another replica behind a
    /// load balancer would be), with its own pool, caches and the same clock.
    /// It must be dropped before `self`, which owns the database.
    pub async fn replica(&self) -> TestApp {
        let store = Store::open(&self.store_config).await.unwrap();
        let state = AppState::assemble(store, self.config.clone(), Arc::new(self.clock.clone()))
            .await
            .unwrap();
        TestApp {
            router: app_with_routes(state.clone(), Router::new()),
            state,
            clock: self.clock.clone(),
            store_config: self.store_config.clone(),
            config: self.config.clone(),
            _db: None,
        }
    }

    /// An app on a database the test manages itself (`store_config`), such
    /// as a private PostgreSQL it stops and starts.
    pub async fn on_store(store_config: corral_store::StoreConfig, config: Config) -> TestApp {
        let store = Store::open(&store_config).await.unwrap();
        let clock = ManualClock::at(1_795_510_020_000);
        let state = AppState::assemble(store, config.clone(), Arc::new(clock.clone()))
            .await
            .unwrap();
        TestApp {
            router: app_with_routes(state.clone(), Router::new()),
            state,
            clock,
            store_config,
            config,
            _db: None,
        }
    }

    /// The app's clock, in Unix seconds.
    pub fn clock_secs(&self) -> i64 {
        use corral_core::clock::Clock;
        self.clock.now_ms() / 1000
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// A request with `Authorization: Bearer token` and an optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// Registers `name` (email `name@example.com`) and returns its access and refresh tokens.
    /// A new user on `plan` (set before their first authenticated request,
    /// so nothing has cached the old plan); their access token.
    pub async fn register_on_plan(&self, name: &str, plan: &str) -> String {
        let res = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({"email": format!("{name}@example.com"), "username": name, "password": "correct horse battery"}).to_string(),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        sqlx::query("UPDATE users SET plan_id = $1 WHERE username = $2")
            .bind(plan)
            .bind(name)
            .execute(self.state.store.pool())
            .await
            .unwrap();
        let tokens = self.login(name, "correct horse battery").await;
        tokens.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn register_and_login(&self, name: &str) -> (String, String) {
        let res = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({"email": format!("{name}@example.com"), "username": name, "password": "correct horse battery"}).to_string(),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let tokens = self.login(name, "correct horse battery").await;
        assert_eq!(tokens.status, 200, "{}", tokens.text());
        let body = tokens.json();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn login(&self, login: &str, password: &str) -> TestResponse {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"login": login, "password": password}).to_string(),
        )
        .await
    }

    /// Creates an API key with `scopes` using `token`; returns (key, id).
    pub async fn create_key(&self, token: &str, scopes: &[&str]) -> (String, String) {
        let res = self
            .call(
                "POST",
                "/api/v1/api-keys",
                token,
                Some(serde_json::json!({"name": "test", "scopes": scopes})),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let body = res.json();
        (
            body["key"].as_str().unwrap().to_owned(),
            body["id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn post_json(&self, path: &str, body: &str) -> TestResponse {
        self.send(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
    }
}

pub struct TestAppBuilder {
    backend: Backend,
    config: Config,
    routes: Router<AppState>,
}

impl TestAppBuilder {
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> TestAppBuilder {
        change(&mut self.config);
        self
    }

    pub fn routes(mut self, routes: Router<AppState>) -> TestAppBuilder {
        self.routes = routes;
        self
    }

    pub async fn build(self) -> TestApp {
        let db = TestDatabase::new(self.backend).await;
        let store = Store::open(&db.config).await.unwrap();
        let clock = ManualClock::at(1_795_510_020_000);
        let state = AppState::assemble(store, self.config.clone(), Arc::new(clock.clone()))
            .await
            .unwrap();
        TestApp {
            router: app_with_routes(state.clone(), self.routes),
            state,
            clock,
            store_config: db.config.clone(),
            config: self.config,
            _db: Some(db),
        }
    }
}
