//! Who may do what: platform roles, organization roles, API-key scopes, and
//! the one function that decides, [`can`].
//!
//! Every route declares the [`Action`] it performs; the server asks `can`
//! and nothing else. Keeping the whole rule in one table makes the
//! role × action matrix testable as data.

use std::fmt;
use std::str::FromStr;

/// A role across the whole installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlatformRole {
    /// An ordinary account.
    User,
    /// Manages users, plans and the audit log.
    Admin,
    /// Also manages admins.
    SuperAdmin,
}

/// A member's role inside one organization; ordered from least to most power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    /// Reads the org's resources.
    Viewer,
    /// Creates and uses resources.
    Member,
    /// Also manages members, invitations and the org's audit log.
    Admin,
    /// Also deletes the org and manages owners.
    Owner,
}

/// What an API key is allowed to do. A JWT or cookie session carries every scope.
/// A `…:write` scope includes the matching `…:read` (see [`Scope::includes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read sandboxes.
    SandboxesRead,
    /// Create, change and use sandboxes.
    SandboxesWrite,
    /// Read executions.
    ExecutionsRead,
    /// Submit executions.
    ExecutionsWrite,
    /// Read the code library.
    LibraryRead,
    /// Change the code library.
    LibraryWrite,
    /// Read organizations and members.
    OrgsRead,
    /// Change organizations and members.
    OrgsWrite,
    /// Create and revoke API keys.
    KeysWrite,
    /// Platform administration (only effective for admin users).
    Admin,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The value as stored and sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s,)* }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<$ty, UnknownValue> {
                match s {
                    $($s => Ok($ty::$variant),)*
                    _ => Err(UnknownValue {
                        kind: stringify!($ty),
                        value: s.to_owned(),
                        expected: &[$($s),*],
                    }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(PlatformRole { User => "user", Admin => "admin", SuperAdmin => "super_admin" });
string_enum!(OrgRole { Viewer => "viewer", Member => "member", Admin => "admin", Owner => "owner" });
string_enum!(Scope {
    SandboxesRead => "sandboxes:read",
    SandboxesWrite => "sandboxes:write",
    ExecutionsRead => "executions:read",
    ExecutionsWrite => "executions:write",
    LibraryRead => "library:read",
    LibraryWrite => "library:write",
    OrgsRead => "orgs:read",
    OrgsWrite => "orgs:write",
    KeysWrite => "keys:write",
    Admin => "admin",
});

impl Scope {
    /// Whether a key holding `self` may act where `needed` is required: the
    /// scope itself, or the read scope of the same resource for a write
    /// scope (a key that may create a sandbox may read it).
    pub fn includes(self, needed: Scope) -> bool {
        self == needed
            || matches!(
                (self, needed),
                (Scope::SandboxesWrite, Scope::SandboxesRead)
                    | (Scope::ExecutionsWrite, Scope::ExecutionsRead)
                    | (Scope::LibraryWrite, Scope::LibraryRead)
                    | (Scope::OrgsWrite, Scope::OrgsRead)
            )
    }
}

/// A string that names no value of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of: {}", expected.join(", "))]
pub struct UnknownValue {
    /// Which enumeration.
    pub kind: &'static str,
    /// The string given.
    pub value: String,
    /// The accepted strings.
    pub expected: &'static [&'static str],
}

/// Something a request does; each route declares exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read one's own account and usage (any credential, including API keys).
    ReadSelf,
    /// Change one's own account (password, profile); not with an API key.
    ManageSelf,
    /// List one's own API keys.
    ReadKeys,
    /// Create, change or revoke one's own API keys.
    WriteKeys,
    /// Revoke the API key the request is made with (any key may end itself).
    RevokeOwnKey,
    /// Create an organization.
    CreateOrg,
    /// List the organizations one belongs to.
    ListOrgs,
    /// Read the current org and its members.
    ReadOrg,
    /// Rename the org.
    WriteOrg,
    /// Invite, remove and change roles of members.
    ManageMembers,
    /// Delete the org.
    DeleteOrg,
    /// Read the current org's audit log.
    ReadOrgAudit,
    /// Read sandboxes of the current org: their state, settings and stats.
    ReadSandboxes,
    /// Read what is inside a sandbox: files, process output, terminals and
    /// contexts. A member's working data (and whatever secrets it holds), so
    /// not for viewers.
    ReadSandboxContents,
    /// Create and use sandboxes of the current org.
    WriteSandboxes,
    /// Read executions of the current org.
    ReadExecutions,
    /// Submit executions in the current org.
    WriteExecutions,
    /// Read library snippets.
    ReadLibrary,
    /// Change library snippets.
    WriteLibrary,
    /// Run a library snippet: reads the snippet and submits an execution.
    RunSnippet,
    /// Platform administration: users, plans, the whole audit log.
    Administer,
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT access token or a browser session: the user's full rights.
    Session,
    /// An API key, limited to its scopes.
    ApiKey {
        /// The key's id.
        key_id: String,
        /// What the key may do.
        scopes: Vec<Scope>,
    },
}

/// The authenticated caller of one request, in the org the request acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// The user's platform role.
    pub platform_role: PlatformRole,
    /// The org the request acts in (from the API key, `X-Corral-Org`, or the personal org).
    pub org_id: String,
    /// The user's role in that org.
    pub org_role: OrgRole,
    /// How the user authenticated.
    pub credential: Credential,
}

/// What an API key needs for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRule {
    /// No key may do it; only a signed-in session.
    Never,
    /// Every valid key may do it.
    Always,
    /// Keys with every one of these scopes may do it.
    Needs(&'static [Scope]),
}

impl Action {
    /// What an API key needs to perform this action.
    fn key_rule(self) -> KeyRule {
        use Scope::*;
        KeyRule::Needs(match self {
            // A key acts in the one org it was made for, so an org it
            // created would be out of its reach: creating orgs is for
            // signed-in sessions.
            Action::ManageSelf | Action::CreateOrg => return KeyRule::Never,
            Action::ReadSelf | Action::RevokeOwnKey => return KeyRule::Always,
            Action::ReadKeys | Action::WriteKeys => &[KeysWrite],
            Action::ListOrgs | Action::ReadOrg | Action::ReadOrgAudit => &[OrgsRead],
            Action::WriteOrg | Action::ManageMembers | Action::DeleteOrg => &[OrgsWrite],
            Action::ReadSandboxes | Action::ReadSandboxContents => &[SandboxesRead],
            Action::WriteSandboxes => &[SandboxesWrite],
            Action::ReadExecutions => &[ExecutionsRead],
            Action::WriteExecutions => &[ExecutionsWrite],
            Action::ReadLibrary => &[LibraryRead],
            Action::WriteLibrary => &[LibraryWrite],
            Action::RunSnippet => &[LibraryRead, ExecutionsWrite],
            Action::Administer => &[Admin],
        })
    }

    /// Whether an API key may never do this (only a signed-in session).
    pub fn needs_session(self) -> bool {
        self.key_rule() == KeyRule::Never
    }

    /// The scopes of `scopes` that fall short of this action, by their
    /// public names: empty when a key with `scopes` may do it (or when no
    /// key may, see [`Action::needs_session`]).
    pub fn missing_scopes(self, scopes: &[Scope]) -> Vec<Scope> {
        match self.key_rule() {
            KeyRule::Never | KeyRule::Always => Vec::new(),
            KeyRule::Needs(needed) => needed
                .iter()
                .copied()
                .filter(|n| !scopes.iter().any(|s| s.includes(*n)))
                .collect(),
        }
    }

    /// Whether `role` is enough in the org, whatever the credential.
    pub fn allows_org_role(self, role: OrgRole) -> bool {
        self.min_org_role().is_none_or(|min| role >= min)
    }

    /// The least org role that may do this; `None` when the org role is irrelevant.
    pub fn min_org_role(self) -> Option<OrgRole> {
        match self {
            Action::ReadSelf
            | Action::ManageSelf
            | Action::CreateOrg
            | Action::ListOrgs
            | Action::ReadKeys
            | Action::WriteKeys
            | Action::RevokeOwnKey
            | Action::Administer => None,
            Action::ReadOrg
            | Action::ReadSandboxes
            | Action::ReadExecutions
            | Action::ReadLibrary => Some(OrgRole::Viewer),
            Action::ReadSandboxContents
            | Action::WriteSandboxes
            | Action::WriteExecutions
            | Action::WriteLibrary
            | Action::RunSnippet => Some(OrgRole::Member),
            Action::WriteOrg | Action::ManageMembers | Action::ReadOrgAudit => Some(OrgRole::Admin),
            Action::DeleteOrg => Some(OrgRole::Owner),
        }
    }
}

/// Whether `principal` may perform `action` in its current org.
///
/// All three gates must pass: the platform role (administration needs an
/// admin), the org role (at least the action's minimum), and, for API keys,
/// the key's scopes.
pub fn can(principal: &Principal, action: Action) -> bool {
    if action == Action::Administer && principal.platform_role < PlatformRole::Admin {
        return false;
    }
    if !action.allows_org_role(principal.org_role) {
        return false;
    }
    match &principal.credential {
        Credential::Session => true,
        Credential::ApiKey { scopes, .. } => {
            !action.needs_session() && action.missing_scopes(scopes).is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(platform: PlatformRole, org: OrgRole, scopes: Option<&[Scope]>) -> Principal {
        Principal {
            user_id: "u".into(),
            platform_role: platform,
            org_id: "o".into(),
            org_role: org,
            credential: match scopes {
                None => Credential::Session,
                Some(s) => Credential::ApiKey {
                    key_id: "k".into(),
                    scopes: s.to_vec(),
                },
            },
        }
    }

    /// The org-role matrix for sessions: one row per action, allowed for
    /// (viewer, member, admin, owner).
    #[test]
    fn org_role_matrix() {
        use Action::*;
        let table: &[(Action, [bool; 4])] = &[
            (ReadSelf, [true, true, true, true]),
            (ManageSelf, [true, true, true, true]),
            (ReadKeys, [true, true, true, true]),
            (WriteKeys, [true, true, true, true]),
            (RevokeOwnKey, [true, true, true, true]),
            (ListOrgs, [true, true, true, true]),
            (CreateOrg, [true, true, true, true]),
            (ReadOrg, [true, true, true, true]),
            (ReadSandboxes, [true, true, true, true]),
            (ReadExecutions, [true, true, true, true]),
            (ReadLibrary, [true, true, true, true]),
            // Viewers see that sandboxes exist and how they run, not what is
            // inside them (files, process output, terminals, contexts).
            (ReadSandboxContents, [false, true, true, true]),
            (WriteSandboxes, [false, true, true, true]),
            (RunSnippet, [false, true, true, true]),
            (WriteExecutions, [false, true, true, true]),
            (WriteLibrary, [false, true, true, true]),
            (WriteOrg, [false, false, true, true]),
            (ManageMembers, [false, false, true, true]),
            (ReadOrgAudit, [false, false, true, true]),
            (DeleteOrg, [false, false, false, true]),
            (Administer, [false, false, false, false]),
        ];
        let roles = [
            OrgRole::Viewer,
            OrgRole::Member,
            OrgRole::Admin,
            OrgRole::Owner,
        ];
        for (action, expected) in table {
            for (role, allowed) in roles.iter().zip(expected) {
                let p = principal(PlatformRole::User, *role, None);
                assert_eq!(can(&p, *action), *allowed, "{action:?} as {role}");
            }
        }
    }

    #[test]
    fn administration_needs_a_platform_admin_and_for_keys_the_admin_scope() {
        for role in PlatformRole::ALL {
            let allowed = *role >= PlatformRole::Admin;
            let p = principal(*role, OrgRole::Viewer, None);
            assert_eq!(can(&p, Action::Administer), allowed, "{role}");
        }
        let key_without = principal(
            PlatformRole::Admin,
            OrgRole::Owner,
            Some(&[Scope::OrgsRead]),
        );
        assert!(!can(&key_without, Action::Administer));
        let key_with = principal(PlatformRole::Admin, OrgRole::Owner, Some(&[Scope::Admin]));
        assert!(can(&key_with, Action::Administer));
        let user_key = principal(PlatformRole::User, OrgRole::Owner, Some(&[Scope::Admin]));
        assert!(
            !can(&user_key, Action::Administer),
            "the scope cannot lift a plain user"
        );
    }

    #[test]
    fn keys_are_limited_to_their_scopes_and_never_manage_the_account() {
        let key = principal(
            PlatformRole::User,
            OrgRole::Owner,
            Some(&[Scope::SandboxesRead, Scope::ExecutionsWrite]),
        );
        assert!(can(&key, Action::ReadSandboxes));
        assert!(!can(&key, Action::WriteSandboxes));
        assert!(can(&key, Action::WriteExecutions));
        assert!(!can(&key, Action::WriteKeys));
        assert!(!can(&key, Action::ManageSelf));
        assert!(
            can(&key, Action::ReadSelf),
            "any key may read its own account"
        );
        // A scope never lifts the org role.
        let viewer_key = principal(
            PlatformRole::User,
            OrgRole::Viewer,
            Some(&[Scope::SandboxesWrite]),
        );
        assert!(!can(&viewer_key, Action::WriteSandboxes));
    }

    /// (scopes of a key, action, allowed) for an org owner's key.
    #[test]
    fn write_scopes_include_their_read_scope_and_nothing_else() {
        use Action::*;
        use Scope::*;
        let table: &[(&[Scope], Action, bool)] = &[
            (&[SandboxesWrite], ReadSandboxes, true),
            (&[SandboxesWrite], ReadSandboxContents, true),
            (&[SandboxesWrite], WriteSandboxes, true),
            (&[SandboxesRead], WriteSandboxes, false),
            (&[ExecutionsWrite], ReadExecutions, true),
            (&[LibraryWrite], ReadLibrary, true),
            (&[OrgsWrite], ReadOrg, true),
            (&[OrgsWrite], ListOrgs, true),
            (&[SandboxesWrite], ReadExecutions, false),
            (&[KeysWrite], ReadSandboxes, false),
            (&[Admin], ReadSandboxes, false),
            // Running a snippet reads the library and submits an execution.
            (&[ExecutionsWrite], RunSnippet, false),
            (&[LibraryRead], RunSnippet, false),
            (&[LibraryRead, ExecutionsWrite], RunSnippet, true),
            (&[LibraryWrite, ExecutionsWrite], RunSnippet, true),
            // A key acts in its own org only: it may not make another.
            (&[OrgsWrite], CreateOrg, false),
        ];
        for (scopes, action, allowed) in table {
            let key = principal(PlatformRole::User, OrgRole::Owner, Some(scopes));
            assert_eq!(can(&key, *action), *allowed, "{scopes:?} for {action:?}");
        }
        assert_eq!(
            Action::RunSnippet.missing_scopes(&[ExecutionsWrite]),
            vec![LibraryRead]
        );
    }

    #[test]
    fn enum_strings_round_trip_and_unknown_values_list_the_choices() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), *s);
        }
        for r in OrgRole::ALL {
            assert_eq!(r.as_str().parse::<OrgRole>().unwrap(), *r);
        }
        let err = "sandboxes:delete".parse::<Scope>().unwrap_err().to_string();
        assert!(
            err.contains("sandboxes:delete") && err.contains("sandboxes:write"),
            "{err}"
        );
    }
}
