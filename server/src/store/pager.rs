//! What the pager is still owed: escalations an operator resolved on a STOPPED
//! hub's folder (`peerhub escalation resolve`), whose pager incident nobody could
//! close then. The next start sends their `resolve` page (`meta`
//! `pager_owed_resolves`, a bounded list of escalation ids).

use super::{decode, encode, Store, StoreError};

const KEY: &str = "pager_owed_resolves";

/// Ids kept at most; past it the oldest go (their incidents are closed by hand).
pub const MAX_OWED: usize = 1_000;

impl Store {
    /// Notes that escalation `id` was resolved with no pager to tell. Durable with
    /// the next flush or commit.
    pub fn owe_pager_resolve(&self, id: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut owed = self.owed_pager_resolves()?;
        if !owed.contains(&id) {
            owed.push(id);
        }
        if owed.len() > MAX_OWED {
            owed.drain(..owed.len() - MAX_OWED);
        }
        self.t().meta.insert(KEY, encode(&owed))?;
        Ok(())
    }

    /// Takes the owed ids (the list is emptied; durable with the next commit).
    pub fn take_owed_pager_resolves(&self) -> Result<Vec<u64>, StoreError> {
        let _writing = self.writing();
        let owed = self.owed_pager_resolves()?;
        if !owed.is_empty() {
            self.t().meta.remove(KEY)?;
        }
        Ok(owed)
    }

    fn owed_pager_resolves(&self) -> Result<Vec<u64>, StoreError> {
        self.t()
            .meta
            .get(KEY)?
            .map(|v| decode("meta", &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}
