//! When a compaction is owed: the time the first deletion that needs one (an
//! ephemeral session's end) was made durable, kept in `meta` `compaction_due` in
//! the same commit as the deletion, so a crash before the compaction still leaves
//! it owed. The compaction job ([`crate::compactor`]) reads it; a successful
//! compaction clears it.

use super::{Store, StoreError};

const KEY: &str = "compaction_due";

impl Store {
    /// Owes a compaction from `now_ms`, unless one is already owed (the earliest
    /// time stays). Durable with the next commit.
    pub fn mark_compaction_due(&self, now_ms: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        if self.t().meta.get(KEY)?.is_none() {
            self.t().meta.insert(KEY, &now_ms.to_be_bytes())?;
        }
        Ok(())
    }

    /// Since when a compaction is owed, if one is.
    pub fn compaction_due_since(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.t().meta.get(KEY)?.map(|v| {
            let mut bytes = [0u8; 8];
            let n = v.len().min(8);
            bytes[8 - n..].copy_from_slice(&v[..n]);
            u64::from_be_bytes(bytes)
        }))
    }

    /// The owed compaction is done (durable at once: a crash before this only
    /// compacts once more).
    pub fn clear_compaction_due(&self) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().meta.remove(KEY)?;
        self.t().db.flush()?;
        Ok(())
    }
}
