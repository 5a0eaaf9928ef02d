//! The router's part in an operator's commands on a running hub (`peerhub
//! escalation resolve|list`, `peerhub rota list|set`): they go through the task
//! that owns the open escalations and the rota, so their deadlines, pages and the
//! people told stay right, and in cluster mode every change is in the router's
//! fenced log like any other router write (see `admin::escalations`,
//! `admin::rota`).

use tokio::sync::oneshot;

use super::EscalationRouter;
use crate::admin::{escalations, AdminError};
use crate::escalation::OperatorAsk;

type Reply = oneshot::Sender<Result<serde_json::Value, AdminError>>;

impl EscalationRouter {
    /// Carries out `ask` and answers `reply`. A listing is read off the task (a
    /// large store must not hold up a flag), from this router's store, which
    /// holds every escalation the router wrote.
    pub(super) async fn operator(&mut self, ask: OperatorAsk, reply: Reply) {
        let answer = match ask {
            OperatorAsk::Resolve { id, outcome } => self.operator_resolve(id, outcome).await,
            OperatorAsk::List { filter, limit } => {
                let (store, audit, committer) = (
                    self.store.clone(),
                    self.audit.clone(),
                    self.committer.clone(),
                );
                let now = self.clock.now_ms();
                tokio::spawn(async move {
                    let listed = tokio::task::spawn_blocking(move || {
                        let listed = escalations::list(&store, filter, limit, now)?;
                        escalations::audit_list(&store, &audit, filter, now)?;
                        Ok::<_, AdminError>(listed)
                    })
                    .await
                    .unwrap_or_else(|_| {
                        Err(AdminError::Server(
                            "the listing failed inside the server".into(),
                        ))
                    });
                    let answer = match listed {
                        Ok(listed) => match committer.commit().await {
                            Ok(()) => Ok(listed),
                            Err(e) => Err(AdminError::Server(format!("not made durable: {e}"))),
                        },
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                });
                return;
            }
            OperatorAsk::RotaList => serde_json::to_value(&self.rota)
                .map_err(|e| AdminError::Server(format!("the rota: {e}"))),
            OperatorAsk::RotaSet { entries } => self.operator_set_rota(entries).await,
        };
        let _ = reply.send(answer);
    }

    /// Resolves open escalation `id` as the operator, durably (in cluster mode in
    /// the router's log, so the next leader finds it resolved), then tells
    /// whoever a supervisor's resolve would tell. Refuses an unknown or resolved
    /// id, changing nothing.
    async fn operator_resolve(
        &mut self,
        id: u64,
        outcome: String,
    ) -> Result<serde_json::Value, AdminError> {
        let Some(open) = self.open.get(&id) else {
            return Err(escalations::not_open(&self.store, id));
        };
        // Changed on a copy: a refusal or a failed write leaves the open one as it was.
        let mut record = open.clone();
        let now = self.clock.now_ms();
        let summary = escalations::resolve(&self.store, &self.audit, &mut record, outcome, now)?;
        // For the router's log too (the store has it already).
        self.write_escalation(&record)?;
        // Resolved: out of the queue, the deadlines and the by-subject index, so a
        // new flag about the person opens a new escalation.
        self.insert_open(record.clone());
        if let Err(error) = self.commit().await {
            return Err(AdminError::Server(format!("not made durable: {error}")));
        }
        self.broadcast_record(&record);
        let keys = self.interested(&record);
        self.notify(
            &keys,
            &record.view.group,
            id,
            "resolved",
            "This request for support has been closed.".into(),
        );
        self.staff.resolved(&record);
        self.alerts.resolved(self.alert_summary_of(&record));
        tracing::info!(escalation = id, "escalation resolved by an operator");
        Ok(summary)
    }

    /// Replaces the rota as the operator: checked as `peerhub rota set` on a
    /// stopped hub, audited (`rota.set`, signed with the hub's key), written and
    /// committed (in cluster mode into the router's fenced log) before the router
    /// follows it. A refusal or a failed commit leaves the rota it follows as it
    /// was.
    async fn operator_set_rota(
        &mut self,
        entries: Vec<peerhub_protocol::escalation::RotaEntry>,
    ) -> Result<serde_json::Value, AdminError> {
        crate::admin::rota::check_form(&entries)?;
        let keys: Vec<_> = entries.iter().map(|entry| entry.supervisor).collect();
        if let Some(key) =
            super::first_not_supervisor(&self.store, self.owned.as_deref(), &keys).await?
        {
            return Err(crate::admin::rota::not_a_supervisor(&key));
        }
        let now = self.clock.now_ms();
        crate::admin::rota::audit_set(&self.store, &self.audit, &entries, now)?;
        self.write_rota(&entries)?;
        if let Err(error) = self.commit().await {
            return Err(AdminError::Server(format!("not made durable: {error}")));
        }
        let count = entries.len();
        self.follow_rota(entries, now);
        tracing::info!(entries = count, "rota set by an operator");
        Ok(serde_json::json!({ "entries": count }))
    }
}
