//! What an operator can ask of a hub from its machine: the same requests whether
//! the server is running (they travel over the data folder's control socket and
//! run inside the server) or stopped (the command opens the folder itself).
//! Clearing a waiting room on a running hub goes through the group's task, which
//! holds its members; this module makes its audit entry.
//!
//! Every change is signed with the hub's own key (the operator acting through the
//! hub) and written to the audit chain like any other action.
//!
//! In cluster mode (a running node: [`Operator::directory`]) what belongs to the
//! cluster's directory — invites, facilitator grants, groups — is written there
//! first and then applied to this node's store, as the hub's own requests are.
//! The requests run on a blocking thread (the control socket's), which waits
//! for the directory's answer.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::{
    AdminPayload, CreateGroupPayload, InvitePayload, InviteRole, SessionWindow,
};
use peerhub_protocol::{GroupId, SignedEnvelope};
use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::audit::{action, AuditLog, NewEntry};
use crate::cluster::directory::{apply_own_account, apply_own_write, Directory};
use crate::cluster::ClusterError;
use crate::error::ServerError;
use crate::groups::Creation;
use crate::invites::{InviteSpec, DEFAULT_TTL_MS, MAX_TTL_MS};
use crate::store::Store;

/// One operator request (the control socket's wire form: one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// A consistent copy of the whole store, written by the hub to `out`.
    Backup {
        /// Where to write it (absolute; must not exist).
        out: PathBuf,
    },
    /// A single-use invite link.
    Invite {
        /// What it grants.
        role: InviteRole,
        /// For `member`: the virtual group.
        group: Option<GroupId>,
        /// How long it stays valid (default 24 h, at most 30 days).
        ttl_hours: Option<u64>,
    },
    /// Grant a key facilitator standing in one group, or revoke it (as an
    /// admin's `grant` does). On a running hub the group's task is told, so a
    /// revoke takes effect on live connections.
    FacilitatorGrant {
        /// The facilitator's key.
        key: peerhub_protocol::PublicKey,
        /// The group.
        group: GroupId,
        /// Revoke rather than grant.
        #[serde(default)]
        revoke: bool,
    },
    /// Every group.
    GroupList,
    /// A new group, as an admin would create it over the protocol.
    GroupCreate {
        /// Everything a `create_group` request carries (`counter`/`ts` are set by
        /// the hub).
        request: Box<CreateGroupPayload>,
    },
    /// Replace a group's schedule of session windows.
    GroupSchedule {
        /// Which group.
        group: GroupId,
        /// The new windows (empty: sessions open whenever a facilitator opens one).
        windows: Vec<SessionWindow>,
    },
    /// Clear a group's waiting room: every record of someone who only ever
    /// waited (never admitted, not declined this session) is forgotten; people
    /// connected are told and may knock again. On a running hub the group's task
    /// does it.
    GroupClearWaiting {
        /// Which group.
        group: GroupId,
    },
    /// Everything held about one key, as JSON (the person's own data).
    Export {
        /// Whose.
        key: peerhub_protocol::PublicKey,
    },
    /// Cluster mode, on a running node: the group part of one key's erasure in
    /// every group whose log names it, through each group's owner
    /// (`crate::cluster::erasure`). The account, co-produced records and the
    /// nodes' audit chains are not reached yet, so `peerhub erase` still
    /// refuses a cluster folder. On one node, or a stopped folder, refused.
    ClusterEraseGroups {
        /// Whose.
        key: peerhub_protocol::PublicKey,
    },
    /// `peerhub erase` on a running hub's folder: on a cluster node, the
    /// person's erasure across the cluster (`crate::cluster::erasure::erase_person`);
    /// a single hub refuses it (stop it and run `peerhub erase` on the folder).
    Erase {
        /// Whose.
        key: peerhub_protocol::PublicKey,
    },
    /// Escalations as bounded summaries (no words, no people but the handler).
    EscalationList {
        /// Which (default: every unresolved one).
        #[serde(default)]
        filter: super::escalations::EscalationFilter,
        /// At most this many (default 200).
        limit: Option<usize>,
    },
    /// The on-call rota. On a running cluster node the control socket asks the
    /// router's leader.
    RotaList,
    /// Replace the on-call rota (each entry names a supervisor). On a running
    /// cluster node the control socket hands it to the router's leader.
    RotaSet {
        /// The new entries.
        entries: Vec<peerhub_protocol::escalation::RotaEntry>,
    },
    /// Resolve one escalation with an outcome. On a running hub the control socket
    /// hands it to the router task, never to [`Operator::execute`] (which, for this
    /// request, is for a stopped hub's folder only).
    EscalationResolve {
        /// Which.
        id: u64,
        /// What was done, as a supervisor would record it.
        outcome: String,
    },
}

impl AdminRequest {
    /// The command's name, for logs (no arguments: they can name people).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Backup { .. } => "backup",
            Self::Invite { .. } => "invite",
            Self::GroupList => "group list",
            Self::FacilitatorGrant { revoke: false, .. } => "grant",
            Self::FacilitatorGrant { revoke: true, .. } => "revoke",
            Self::GroupCreate { .. } => "group create",
            Self::GroupSchedule { .. } => "group schedule",
            Self::GroupClearWaiting { .. } => "group clear-waiting",
            Self::Export { .. } => "export",
            Self::ClusterEraseGroups { .. } => "cluster erase-groups",
            Self::Erase { .. } => "erase",
            Self::EscalationList { .. } => "escalation list",
            Self::EscalationResolve { .. } => "escalation resolve",
            Self::RotaList => "rota list",
            Self::RotaSet { .. } => "rota set",
        }
    }
}

/// Why a command does not work on a running cluster node, by its name
/// ([`AdminRequest::name`]): it would read or change one node's copy while the
/// cluster's record is in NATS (docs/CLUSTER.md §8). `None`: it works on a
/// running node.
pub fn cluster_refusal_by_name(command: &str) -> Option<String> {
    (command == "backup").then(|| {
        "refused in cluster mode: one node's store is not the cluster's data; back the \
         cluster up from NATS with `peerhub backup --config FILE --out FILE` \
         (docs/CLUSTER.md §8)"
            .to_string()
    })
}

/// Someone acting on a hub's data: its store and audit chain, at a time.
#[derive(Debug)]
pub struct Operator<'a> {
    /// The store.
    pub store: &'a Store,
    /// The audit chain.
    pub audit: &'a AuditLog,
    /// Now, ms since the epoch.
    pub now_ms: u64,
    /// Cluster mode: the cluster's directory (`None` on one node, and for a
    /// stopped hub's folder).
    pub directory: Option<&'a Directory>,
}

/// Waits, on a blocking thread (never a runtime's worker), for a directory
/// request; its refusal as an operator reads it.
fn wait_for<T>(
    request: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, AdminError> {
    tokio::runtime::Handle::current()
        .block_on(request)
        .map_err(|error| AdminError::Invalid(ServerError::from(error).to_string()))
}

impl Operator<'_> {
    fn hub_key(&self) -> Result<SigningKey, AdminError> {
        Ok(SigningKey::from_bytes(&self.store.hub_signing_seed()?))
    }

    /// An `admin` payload for `name` at this operator's time.
    fn admin_payload(&self, name: &str) -> AdminPayload {
        AdminPayload {
            action: name.into(),
            subject: None,
            group: None,
            detail: None,
            counter: self.now_ms,
            ts: self.now_ms,
        }
    }

    /// Records an operator's action in the audit chain, signed by the hub's key.
    fn audit_admin(&self, action: &str, payload: AdminPayload) -> Result<(), AdminError> {
        let (subject, group) = (payload.subject, payload.group.clone());
        let env = SignedEnvelope::sign_json(&self.hub_key()?, Kind::Admin, &payload);
        let mut entry = NewEntry::new(self.now_ms, action, env);
        if let Some(subject) = subject {
            entry = entry.subject(subject);
        }
        if let Some(group) = group {
            entry = entry.group(group);
        }
        self.audit.lock().append(entry)?;
        Ok(())
    }

    /// Carries out `request` (not yet durable: the caller commits or flushes).
    pub fn execute(&self, request: AdminRequest) -> Result<serde_json::Value, AdminError> {
        if self.directory.is_some() {
            if let Some(why) = cluster_refusal_by_name(request.name()) {
                return Err(AdminError::Cluster(format!(
                    "`peerhub {}` on a cluster node: {why}",
                    request.name()
                )));
            }
        }
        match request {
            AdminRequest::Backup { out } => self.backup(out),
            AdminRequest::Invite {
                role,
                group,
                ttl_hours,
            } => self.invite(role, group, ttl_hours),
            AdminRequest::GroupList => self.group_list(),
            AdminRequest::FacilitatorGrant { key, group, revoke } => {
                self.facilitator_grant(key, group, revoke)
            }
            AdminRequest::GroupCreate { request } => self.group_create(*request),
            AdminRequest::GroupSchedule { group, windows } => self.group_schedule(group, windows),
            AdminRequest::GroupClearWaiting { group } => self.group_clear_waiting(group),
            AdminRequest::Erase { .. } => Err(AdminError::Invalid(
                "an erasure on a stopped folder is `peerhub erase` (its own command); on a \
                 running node it goes to the control socket"
                    .into(),
            )),
            AdminRequest::ClusterEraseGroups { .. } => Err(AdminError::Invalid(
                "a person's erasure in a cluster's group logs runs on a running cluster node"
                    .into(),
            )),
            AdminRequest::Export { key } => {
                // Cluster mode: this node's copies brought up to the groups' logs
                // first, and the counter the directory holds.
                let counter = match self.directory {
                    Some(directory) => Some(wait_for(crate::export::bring_up_to_the_cluster(
                        self.store, directory, &key,
                    ))?),
                    None => None,
                };
                let payload = AdminPayload {
                    subject: Some(key),
                    ..self.admin_payload("export")
                };
                self.audit_admin(action::ADMIN_EXPORT, payload)?;
                Ok(crate::export::export_key_with(
                    self.store,
                    &key,
                    self.now_ms,
                    counter,
                )?)
            }
            AdminRequest::EscalationList { filter, limit } => {
                let limit = limit.unwrap_or(super::escalations::DEFAULT_LIST_LIMIT);
                let listed = super::escalations::list(self.store, filter, limit, self.now_ms)?;
                super::escalations::audit_list(self.store, self.audit, filter, self.now_ms)?;
                Ok(listed)
            }
            AdminRequest::RotaList => Ok(serde_json::to_value(self.store.rota()?)
                .map_err(|e| AdminError::Invalid(e.to_string()))?),
            AdminRequest::RotaSet { entries } => {
                // A stopped hub's folder (a running one's router sets its own).
                super::rota::check(self.store, &entries)?;
                super::rota::audit_set(self.store, self.audit, &entries, self.now_ms)?;
                self.store.put_rota(&entries)?;
                Ok(serde_json::json!({ "entries": entries.len() }))
            }
            AdminRequest::EscalationResolve { id, outcome } => {
                // A stopped hub's folder: nobody online to tell, no router to keep
                // right; the facilitators find the note in their staff channel.
                let Some(mut record) = self.store.escalation(id)? else {
                    return Err(super::escalations::not_open(self.store, id));
                };
                let summary = super::escalations::resolve(
                    self.store,
                    self.audit,
                    &mut record,
                    outcome,
                    self.now_ms,
                )?;
                super::escalations::note_resolved_in_stopped_folder(
                    self.store,
                    &record,
                    self.now_ms,
                )?;
                // No pager could hear of it now: the next start closes its incident.
                self.store.owe_pager_resolve(id)?;
                let mut summary = summary;
                summary["pager"] =
                    "an open pager incident is closed when the hub next starts".into();
                Ok(summary)
            }
        }
    }

    fn backup(&self, out: PathBuf) -> Result<serde_json::Value, AdminError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file_error = |reason: String| AdminError::File {
            path: out.clone(),
            reason,
        };
        // It holds everything: owner-only, like the data folder.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&out)
            .map_err(|e| file_error(e.to_string()))?;
        let copied = (|| {
            // The copy holds the record of itself.
            self.audit_admin(action::ADMIN_BACKUP, self.admin_payload("backup"))?;
            let mut writer = std::io::BufWriter::new(file);
            let summary = self.store.backup_leaving_out(
                &mut writer,
                self.now_ms,
                &crate::audit::records_only_a_read,
            )?;
            writer
                .into_inner()
                .map_err(|e| file_error(e.to_string()))?
                .sync_all()
                .map_err(|e| file_error(e.to_string()))?;
            Ok(summary)
        })();
        let summary = match copied {
            Ok(summary) => summary,
            Err(error) => {
                // No half-written file that looks like a backup.
                let _ = std::fs::remove_file(&out);
                return Err(error);
            }
        };
        Ok(serde_json::json!({
            "file": out,
            "entries": summary.entries,
            "digest": summary.digest,
            "content_digest": summary.content_digest,
        }))
    }

    fn invite(
        &self,
        role: InviteRole,
        group: Option<GroupId>,
        ttl_hours: Option<u64>,
    ) -> Result<serde_json::Value, AdminError> {
        let ttl_ms = ttl_hours.map_or(DEFAULT_TTL_MS, |h| h.saturating_mul(3_600_000));
        if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
            return Err(AdminError::Invalid(
                "an invite lasts from 1 hour to 30 days (720 hours)".into(),
            ));
        }
        match (&role, &group) {
            (InviteRole::Member, None) => {
                return Err(AdminError::Invalid(
                    "a member invite names its virtual group (--group)".into(),
                ))
            }
            (InviteRole::Member, Some(id)) => {
                let Some(record) = self.store.group(id)? else {
                    return Err(AdminError::Invalid(format!("no group {id}")));
                };
                if record.kind != peerhub_protocol::payload::GroupKind::Virtual {
                    return Err(AdminError::Invalid(format!(
                        "{id} is a drop-in group: anyone may join it without an invite"
                    )));
                }
            }
            (InviteRole::Facilitator, None) => {
                return Err(AdminError::Invalid(
                    "a facilitator invite names the group it grants (--group)".into(),
                ))
            }
            (InviteRole::Facilitator, Some(id)) => {
                if self.store.group(id)?.is_none() {
                    return Err(AdminError::Invalid(format!("no group {id}")));
                }
            }
            (_, Some(_)) => {
                return Err(AdminError::Invalid(
                    "only member and facilitator invites name a group".into(),
                ))
            }
            (_, None) => {}
        }
        // A facilitator invite grants its group through `groups`.
        let (group, groups) = match role {
            InviteRole::Facilitator => (None, group.into_iter().collect::<Vec<_>>()),
            _ => (group, Vec::new()),
        };
        let hub = self.hub_key()?;
        let payload = InvitePayload {
            role,
            group: group.clone(),
            groups: groups.clone(),
            ttl_ms: Some(ttl_ms),
            counter: self.now_ms,
            ts: self.now_ms,
        };
        let env = SignedEnvelope::sign_json(&hub, Kind::Invite, &payload);
        let mut entry = NewEntry::new(self.now_ms, action::INVITE_CREATE, env);
        if let Some(group) = group.as_ref().or(groups.first()) {
            entry = entry.group(group.clone());
        }
        let spec = InviteSpec {
            role,
            group,
            groups,
            ttl_ms,
            bootstrap: false,
        };
        let token = if let Some(directory) = self.directory {
            // Stored in the directory, where every node redeems it; an entry
            // that then fails leaves an invite whose token nobody was given.
            let token = wait_for(crate::invites::create_shared(
                directory,
                spec,
                None,
                self.now_ms,
            ))?;
            self.audit.lock().append(entry)?;
            token
        } else {
            let mut chain = self.audit.lock();
            let token = crate::invites::create(self.store, spec, None, self.now_ms)?;
            chain.append(entry)?;
            token
        };
        Ok(serde_json::json!({
            "role": role,
            "token": token,
            "expires_ms": self.now_ms + ttl_ms,
        }))
    }

    fn facilitator_grant(
        &self,
        key: peerhub_protocol::PublicKey,
        group: GroupId,
        revoke: bool,
    ) -> Result<serde_json::Value, AdminError> {
        if self.store.group(&group)?.is_none() {
            return Err(AdminError::Invalid(format!("no group {group}")));
        }
        let holds = match self.directory {
            Some(directory) => wait_for(directory.facilitates(&key, &group))?,
            None => self.store.facilitates(&key, &group)?,
        };
        if revoke && !holds {
            return Err(AdminError::Invalid(format!(
                "that key holds no facilitator grant for {group}"
            )));
        }
        if !revoke && holds {
            return Err(AdminError::Invalid(format!(
                "that key is already a facilitator of {group}"
            )));
        }
        let (name, action) = if revoke {
            ("role.revoke_group", action::ROLE_REVOKE_GROUP)
        } else {
            ("role.grant_group", action::ROLE_GRANT_GROUP)
        };
        let payload = AdminPayload {
            subject: Some(key),
            group: Some(group.clone()),
            ..self.admin_payload(name)
        };
        // The entry first: a crash after it leaves an entry without its change
        // (the operator runs the command again), never a change without one.
        self.audit_admin(action, payload)?;
        if let Some(directory) = self.directory {
            let written = if revoke {
                wait_for(directory.revoke_facilitator_at(&key, &group))?
            } else {
                let (account, revision) = wait_for(directory.grant_facilitator_at(
                    &key,
                    std::slice::from_ref(&group),
                    self.now_ms,
                ))?;
                revision.map(|revision| (account, revision))
            };
            if let Some((account, revision)) = written {
                apply_own_account(self.store, &key, &account, revision)?;
            }
        } else if revoke {
            self.store.revoke_facilitator(&key, &group)?;
        } else {
            self.store
                .grant_facilitator(&key, std::slice::from_ref(&group), self.now_ms)?;
        }
        Ok(serde_json::json!({ "group": group, "facilitator": !revoke }))
    }

    fn group_create(
        &self,
        mut payload: CreateGroupPayload,
    ) -> Result<serde_json::Value, AdminError> {
        payload.counter = self.now_ms;
        payload.ts = self.now_ms;
        // The code is never signed into the kept request (issue 14, item 7).
        let access_code = payload.access_code.take();
        let env = SignedEnvelope::sign_json(&self.hub_key()?, Kind::CreateGroup, &payload);
        let refused = |e: crate::error::ServerError| AdminError::Invalid(e.to_string());
        let secret = self.store.access_code_secret()?;
        let record = crate::groups::record_from_request(
            &payload,
            access_code.as_deref(),
            &secret,
            None,
            env.clone(),
            self.now_ms,
        )
        .map_err(refused)?;
        let id = record.id.clone();
        let created = match self.directory {
            None => Creation::Here,
            Some(directory) => match wait_for(directory.create_group_at(&record))? {
                Some(revision) => Creation::InDirectory { revision },
                None => return Err(refused(ServerError::GroupExists(id))),
            },
        };
        crate::groups::write_new_group(
            self.store,
            self.audit,
            record,
            env,
            payload.agreement,
            created,
        )
        .map_err(refused)?;
        Ok(serde_json::json!({ "created": id }))
    }

    fn group_schedule(
        &self,
        group: GroupId,
        windows: Vec<SessionWindow>,
    ) -> Result<serde_json::Value, AdminError> {
        crate::groups::check_schedule(&windows).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let Some(mut record) = self.store.group(&group)? else {
            return Err(AdminError::Invalid(format!("no group {group}")));
        };
        let payload = AdminPayload {
            group: Some(group.clone()),
            detail: Some(serde_json::to_string(&windows).unwrap_or_default()),
            ..self.admin_payload("group.schedule")
        };
        self.audit_admin(action::GROUP_SCHEDULE, payload)?;
        record.schedule = windows;
        match self.directory {
            Some(directory) => {
                let revision = wait_for(directory.put_group_at(&record))?;
                apply_own_write(self.store, revision, || self.store.put_group(&record))?;
            }
            None => self.store.put_group(&record)?,
        }
        Ok(serde_json::json!({ "group": group, "windows": record.schedule.len() }))
    }

    /// The audit entry of an operator's clearing of `group`'s waiting room, signed
    /// by the hub's key (a running hub's group task appends it as it clears).
    pub fn clear_waiting_entry(&self, group: &GroupId) -> Result<NewEntry, AdminError> {
        let payload = AdminPayload {
            group: Some(group.clone()),
            ..self.admin_payload("group.clear_waiting")
        };
        let env = SignedEnvelope::sign_json(&self.hub_key()?, Kind::Admin, &payload);
        Ok(NewEntry::new(self.now_ms, action::GROUP_CLEAR_WAITING, env).group(group.clone()))
    }

    /// Clears the waiting room of a group in a stopped hub's folder.
    fn group_clear_waiting(&self, group: GroupId) -> Result<serde_json::Value, AdminError> {
        let Some(record) = self.store.group(&group)? else {
            return Err(AdminError::Invalid(format!("no group {group}")));
        };
        let room = crate::groups::load_room(self.store, record)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let waiting = room.waiting();
        self.audit.append(self.clear_waiting_entry(&group)?)?;
        for key in &waiting {
            self.store.delete_member(&group, key)?;
        }
        Ok(serde_json::json!({ "group": group, "cleared": waiting.len() }))
    }

    /// Records that this folder was restored from a backup whose digest checked
    /// out (the entry comes after the restored chain, so the copy stays exact up to
    /// it).
    pub fn record_restore(
        &self,
        summary: &crate::store::backup::BackupSummary,
    ) -> Result<(), AdminError> {
        let payload = AdminPayload {
            detail: Some(serde_json::to_string(summary).unwrap_or_default()),
            ..self.admin_payload("restore")
        };
        self.audit_admin(action::ADMIN_RESTORE, payload)
    }

    fn group_list(&self) -> Result<serde_json::Value, AdminError> {
        let groups: Vec<serde_json::Value> = self
            .store
            .groups()?
            .into_iter()
            .map(|g| {
                let open = self
                    .store
                    .group_state(&g.id)
                    .ok()
                    .flatten()
                    .map(|s| s.session_open);
                serde_json::json!({
                    "id": g.id,
                    "title": g.title,
                    "kind": g.kind,
                    "created_ms": g.created_ms,
                    "waiting_room": g.waiting_room,
                    "access_code": g.access_code_hash.is_some(),
                    "schedule": g.schedule,
                    "retention": g.retention,
                    "session_open": open,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(groups))
    }
}
