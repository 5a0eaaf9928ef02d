//! How far each escalation's routing steps have had their effects (`meta`
//! `step_done.` ‖ id, one byte: the highest routing level whose pages, pushes or
//! notices were performed). The router writes it after a step's effects and
//! reads it at start, so a step marked done is never performed again, on one
//! node after a restart or on a new leader after a failover (docs/CLUSTER.md §6).

use super::{Store, StoreError};

pub(super) const PREFIX: &[u8] = b"step_done.";

fn key(id: u64) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

impl Store {
    /// The highest routing level of escalation `id` whose effects were performed
    /// (0: none).
    pub fn step_done(&self, id: u64) -> Result<u8, StoreError> {
        match self.t().meta.get(key(id))? {
            None => Ok(0),
            Some(value) if value.len() == 1 => Ok(value[0]),
            Some(_) => Err(StoreError::Corrupt {
                tree: "meta",
                reason: "a routing step's mark is not one byte".into(),
            }),
        }
    }

    /// Marks escalation `id`'s routing level `level` done (and so every level
    /// below it); a mark never goes down. Durable with the next commit.
    pub fn put_step_done(&self, id: u64, level: u8) -> Result<(), StoreError> {
        let _writing = self.writing();
        if self.step_done(id)? >= level {
            return Ok(());
        }
        self.t().meta.insert(key(id), &[level][..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_only_rises_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.step_done(7).unwrap(), 0);
        store.put_step_done(7, 2).unwrap();
        store.put_step_done(7, 1).unwrap();
        assert_eq!(store.step_done(7).unwrap(), 2, "a mark never goes down");
        assert_eq!(store.step_done(8).unwrap(), 0, "marks are per escalation");
        store.t().meta.insert(key(9), &[1u8, 2][..]).unwrap();
        assert!(matches!(
            store.step_done(9),
            Err(StoreError::Corrupt { tree: "meta", .. })
        ));
        assert!(
            store.put_step_done(9, 3).is_err(),
            "nor overwritten blindly"
        );
    }
}
