//! A [`Service`] over a fresh SQLite database in a temporary directory,
//! with no HTTP anywhere: what the service crate's own tests drive.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: each binary uses part of it; a failed step fails the test"
)]

use std::sync::Arc;

use corral_core::auth::{Credential, OrgRole, PlatformRole, Principal};
use corral_core::clock::SystemClock;
use corral_service::{Config, Service};
use corral_store::{NewUser, Store, StoreConfig, User};

/// A service and the directory its database (and sandboxes) live in.
pub struct TestService {
    pub service: Service,
    pub dir: tempfile::TempDir,
}

impl TestService {
    /// A service on SQLite with the default configuration.
    pub async fn new() -> TestService {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let store = Store::open(&StoreConfig::sqlite_in(dir.path()))
            .await
            .expect("the store opens");
        let service = Service::assemble(store, config, Arc::new(SystemClock))
            .await
            .expect("the service assembles");
        TestService { service, dir }
    }

    /// A new account on `plan`, and the principal of a session in its personal org.
    pub async fn user(&self, name: &str, plan: &str) -> (User, Principal) {
        let user = self
            .service
            .store
            .create_user(
                self.service.clock.now_ms(),
                NewUser {
                    email: format!("{name}@example.com"),
                    username: name.to_owned(),
                    // Never checked here: these tests act as the principal directly.
                    password_hash: "unused".to_owned(),
                    role: PlatformRole::User,
                    plan_id: plan.to_owned(),
                },
            )
            .await
            .expect("the user is created");
        let principal = Principal {
            user_id: user.id.clone(),
            platform_role: user.role,
            org_id: user.personal_org_id.clone(),
            org_role: OrgRole::Owner,
            credential: Credential::Session,
        };
        (user, principal)
    }
}

impl TestService {
    /// A service whose executions run in real sandboxes (runc as root, the
    /// agent of `CORRAL_AGENT_BIN`, else the workspace's debug build), kept
    /// under its own directory and destroyed after each run (no reuse), so
    /// a test leaves no sandbox behind.
    pub async fn with_judge() -> TestService {
        let TestService { service, dir } = TestService::new().await;
        let mut config = Config::clone(&service.config);
        config.sandbox.agent = Some(judge_agent());
        config.sandbox.dir = Some(dir.path().join("sandboxes"));
        config.sandbox.runtime_root = Some(dir.path().join("runtime"));
        config.executions.reuse_sandboxes = 0;
        let service = Service::assemble(service.store.clone(), config, Arc::new(SystemClock))
            .await
            .expect("the service assembles");
        TestService { service, dir }
    }
}

/// The agent binary executions' sandboxes run: `CORRAL_AGENT_BIN` (make
/// test: the static build that ships), else `cargo build -p corral-agent`'s.
fn judge_agent() -> std::path::PathBuf {
    corral_runtime::test_agent_binary()
}

/// What the accounts, orgs and keys tests add: a clock they move, a
/// configuration they edit, and accounts with real passwords.
impl TestService {
    /// A service on SQLite whose clock is `clock`, with `edit` applied to
    /// the default configuration.
    pub async fn for_accounts(
        clock: corral_core::clock::ManualClock,
        edit: impl FnOnce(&mut Config),
    ) -> TestService {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        edit(&mut config);
        let store = Store::open(&StoreConfig::sqlite_in(dir.path()))
            .await
            .expect("the store opens");
        let service = Service::assemble(store, config, Arc::new(clock))
            .await
            .expect("the service assembles");
        TestService { service, dir }
    }

    /// A new account `name` (`name@example.com`) with the password
    /// [`ACCOUNT_PASSWORD`], through the same checks as registration.
    pub async fn account(&self, name: &str, plan: &str) -> User {
        corral_service::accounts::create_checked(
            &self.service,
            &format!("{name}@example.com"),
            name,
            ACCOUNT_PASSWORD,
            PlatformRole::User,
            plan,
        )
        .await
        .expect("the account is created")
    }
}

/// The password of every account [`TestService::account`] creates.
pub const ACCOUNT_PASSWORD: &str = "correct horse battery";

/// `user` acting in `org` with `role`, signed in (not with a key).
pub fn member_of(user: &User, org: &str, role: OrgRole) -> Principal {
    Principal {
        user_id: user.id.clone(),
        platform_role: user.role,
        org_id: org.to_owned(),
        org_role: role,
        credential: Credential::Session,
    }
}

/// The configuration of a service that runs sandboxes (as root, with
/// runc) in `data_dir`, their state in its default place.
pub fn sandbox_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.sandbox.agent = Some(judge_agent());
    config
}

impl TestService {
    /// A service on SQLite that runs sandboxes ([`sandbox_config`]).
    pub async fn with_sandboxes() -> TestService {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&StoreConfig::sqlite_in(dir.path()))
            .await
            .expect("the store opens");
        let service = Service::assemble(store, sandbox_config(dir.path()), Arc::new(SystemClock))
            .await
            .expect("the service assembles");
        TestService { service, dir }
    }
}
