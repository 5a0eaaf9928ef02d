//! The router's part in `peerhub escalation resolve` on a running hub: the change
//! goes through the task that owns the open escalations, so their deadlines, pages
//! and the people told stay right (see `admin::escalations`).

use super::EscalationRouter;
use crate::admin::escalations;
use crate::admin::AdminError;

impl EscalationRouter {
    /// Resolves open escalation `id` as the operator, durably, then tells whoever a
    /// supervisor's resolve would tell. Refuses an unknown or resolved id, changing
    /// nothing.
    pub(super) async fn operator_resolve(
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
        // Resolved: out of the queue, the deadlines and the by-subject index, so a
        // new flag about the person opens a new escalation.
        self.insert_open(record.clone());
        if let Err(error) = self.committer.commit().await {
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
}
