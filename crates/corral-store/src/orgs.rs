//! Organizations, their members and invitations.
//!
//! Rules that protect an org's integrity live here, inside transactions, so
//! no interleaving of requests can break them: an org always keeps at least
//! one owner, and a personal org is never deleted.

use corral_core::auth::OrgRole;
use corral_core::id::new_id;

use crate::{Store, StoreError};

/// An organization as seen by one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether it is a user's personal org.
    pub is_personal: bool,
    /// Created (Unix ms).
    pub created_at: i64,
}

/// A member of an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Role in the org.
    pub role: OrgRole,
    /// Joined (Unix ms).
    pub joined_at: i64,
}

/// An invitation (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Id.
    pub id: String,
    /// The org.
    pub org_id: String,
    /// Invited email (lowercased).
    pub email: String,
    /// Role granted on acceptance.
    pub role: OrgRole,
    /// Who invited.
    pub invited_by: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Accepted (Unix ms).
    pub accepted_at: Option<i64>,
    /// Created (Unix ms).
    pub created_at: i64,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Done.
    Done,
    /// No such member.
    NotMember,
    /// It would leave the org without an owner.
    LastOwner,
}

fn role(text: &str) -> Result<OrgRole, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("org role: {e}")))
}

type OrgRow = (String, String, i64, i64);
type InvitationRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
);

fn org((id, name, is_personal, created_at): OrgRow) -> Org {
    Org {
        id,
        name,
        is_personal: is_personal != 0,
        created_at,
    }
}

fn invitation(r: InvitationRow) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: r.0,
        org_id: r.1,
        email: r.2,
        role: role(&r.3)?,
        invited_by: r.4,
        expires_at: r.5,
        accepted_at: r.6,
        created_at: r.7,
    })
}

const INVITATION_COLUMNS: &str =
    "id, org_id, email, role, invited_by, expires_at, accepted_at, created_at";

impl Store {
    /// Creates an org with `owner` as its owner.
    pub async fn create_org(&self, now: i64, name: &str, owner: &str) -> Result<Org, StoreError> {
        let id = new_id();
        let mut tx = self.pool().begin().await?;
        sqlx::query("INSERT INTO orgs (id, name, is_personal, created_at) VALUES ($1, $2, 0, $3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(owner)
        .bind(OrgRole::Owner.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Org {
            id,
            name: name.to_owned(),
            is_personal: false,
            created_at: now,
        })
    }

    /// One org, if `user_id` is a member, with the user's role.
    pub async fn org_for_member(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<Option<(Org, OrgRole)>, StoreError> {
        let row: Option<(String, String, i64, i64, String)> = sqlx::query_as(
            "SELECT o.id, o.name, o.is_personal, o.created_at, m.role FROM orgs o \
             JOIN org_members m ON m.org_id = o.id WHERE o.id = $1 AND m.user_id = $2",
        )
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|(id, name, p, at, r)| Ok((org((id, name, p, at)), role(&r)?)))
            .transpose()
    }

    /// Every org the user belongs to, with the user's role, oldest first.
    pub async fn orgs_of(&self, user_id: &str) -> Result<Vec<(Org, OrgRole)>, StoreError> {
        let rows: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
            "SELECT o.id, o.name, o.is_personal, o.created_at, m.role FROM orgs o \
             JOIN org_members m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, name, p, at, r)| Ok((org((id, name, p, at)), role(&r)?)))
            .collect()
    }

    /// Renames an org.
    pub async fn rename_org(&self, org_id: &str, name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE orgs SET name = $2 WHERE id = $1")
            .bind(org_id)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes an org that is not personal; `Conflict` for a personal org.
    pub async fn delete_org(&self, org_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM orgs WHERE id = $1 AND is_personal = 0")
            .bind(org_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "a personal organization cannot be deleted".into(),
            ));
        }
        self.auth_changed().await;
        Ok(())
    }

    /// The org's members, by join time.
    pub async fn members(&self, org_id: &str) -> Result<Vec<Member>, StoreError> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT u.id, u.username, u.email, m.role, m.created_at FROM org_members m \
             JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY m.created_at, u.id",
        )
        .bind(org_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(user_id, username, email, r, joined_at)| {
                Ok(Member {
                    user_id,
                    username,
                    email,
                    role: role(&r)?,
                    joined_at,
                })
            })
            .collect()
    }

    /// Sets a member's role, keeping at least one owner.
    pub async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        new_role: OrgRole,
    ) -> Result<MembershipChange, StoreError> {
        self.change_membership(org_id, user_id, Some(new_role))
            .await
    }

    /// Removes a member, keeping at least one owner.
    pub async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<MembershipChange, StoreError> {
        self.change_membership(org_id, user_id, None).await
    }

    async fn change_membership(
        &self,
        org_id: &str,
        user_id: &str,
        new_role: Option<OrgRole>,
    ) -> Result<MembershipChange, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Lock the org row first (a no-op update) so two owners cannot demote
        // each other concurrently and leave none (PostgreSQL row lock; SQLite
        // takes its write lock here).
        sqlx::query("UPDATE orgs SET name = name WHERE id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        let current: Option<(String,)> =
            sqlx::query_as("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((current,)) = current else {
            return Ok(MembershipChange::NotMember);
        };
        let stays_owner = new_role == Some(OrgRole::Owner);
        if role(&current)? == OrgRole::Owner && !stays_owner {
            let (owners,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = $2")
                    .bind(org_id)
                    .bind(OrgRole::Owner.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            if owners <= 1 {
                return Ok(MembershipChange::LastOwner);
            }
        }
        match new_role {
            Some(r) => {
                sqlx::query("UPDATE org_members SET role = $3 WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .bind(r.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                // The user's keys for this org stop working with the membership.
                sqlx::query("UPDATE api_keys SET is_active = 0 WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.auth_changed().await;
        Ok(MembershipChange::Done)
    }

    /// Stores an invitation (by token hash).
    #[expect(clippy::too_many_arguments, reason = "one flat insert")]
    pub async fn create_invitation(
        &self,
        now: i64,
        org_id: &str,
        email: &str,
        role: OrgRole,
        token_hash: &str,
        invited_by: &str,
        expires_at: i64,
    ) -> Result<Invitation, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, expires_at, accepted_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(email)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(invited_by)
        .bind(expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(Invitation {
            id,
            org_id: org_id.to_owned(),
            email: email.to_owned(),
            role,
            invited_by: invited_by.to_owned(),
            expires_at,
            accepted_at: None,
            created_at: now,
        })
    }

    /// The org's open (unaccepted) invitations, newest first.
    pub async fn invitations(&self, org_id: &str) -> Result<Vec<Invitation>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND accepted_at IS NULL \
             ORDER BY created_at DESC, id DESC"
        ));
        let rows: Vec<InvitationRow> = sqlx::query_as(sql)
            .bind(org_id)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(invitation).collect()
    }

    /// Deletes one of the org's invitations; `false` when there is none.
    pub async fn delete_invitation(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM invitations WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The open (unaccepted, unexpired) invitation with this token hash for `email`.
    pub async fn open_invitation(
        &self,
        now: i64,
        token_hash: &str,
        email: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2 AND email = $3"
        ));
        let row: Option<InvitationRow> = sqlx::query_as(sql)
            .bind(token_hash)
            .bind(now)
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        row.map(invitation).transpose()
    }

    /// The open invitation with this token hash, whoever asks, with its
    /// org's name: what the invitation page shows to the holder of the
    /// link (the token is the secret; nothing is spent by looking).
    pub async fn invitation_preview(
        &self,
        now: i64,
        token_hash: &str,
    ) -> Result<Option<(Invitation, String)>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2"
        ));
        let row: Option<InvitationRow> = sqlx::query_as(sql)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
        let Some(inv) = row.map(invitation).transpose()? else {
            return Ok(None);
        };
        let name: Option<(String,)> = sqlx::query_as("SELECT name FROM orgs WHERE id = $1")
            .bind(&inv.org_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(name.map(|(name,)| (inv, name)))
    }

    /// Accepts an invitation for a user whose email is `email`: single use,
    /// before expiry, for the invited address only. Returns the invitation,
    /// or `None` when no such usable invitation exists for this user.
    pub async fn accept_invitation(
        &self,
        now: i64,
        token_hash: &str,
        user_id: &str,
        email: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE invitations SET accepted_at = $2 \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2 AND email = $3 \
             RETURNING {INVITATION_COLUMNS}"
        ));
        let row: Option<InvitationRow> = sqlx::query_as(sql)
            .bind(token_hash)
            .bind(now)
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let inv = invitation(row)?;
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
                .bind(&inv.org_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if existing.is_none() {
            sqlx::query(
                "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&inv.org_id)
            .bind(user_id)
            .bind(inv.role.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(inv))
    }
}
