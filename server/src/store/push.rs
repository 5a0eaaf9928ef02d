//! Storage for Web Push: the hub's VAPID key (`meta` `vapid_secret`) and each
//! staff key's push subscriptions (`key_pushsub`, key ‖ SHA-256 of the endpoint;
//! see [`super::keys`]). The logic is in `escalation::push` and `escalation::alerts`.

use peerhub_protocol::PublicKey;

use super::records::PushSubscriptionRecord;
use super::{decode, encode, keys, Store, StoreError};

/// Subscriptions kept per key: a phone, a laptop and a few more; the oldest goes.
pub const MAX_SUBSCRIPTIONS_PER_KEY: usize = 8;

impl Store {
    /// The hub's VAPID private key, made by `make` and stored (durably) on first use.
    pub fn vapid_secret(
        &self,
        make: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, StoreError> {
        let _writing = self.writing();
        if let Some(secret) = self.t().meta.get("vapid_secret")? {
            return Ok(secret.to_vec());
        }
        let secret = make().map_err(|reason| StoreError::Corrupt {
            tree: "meta",
            reason,
        })?;
        self.t().meta.insert("vapid_secret", secret.as_slice())?;
        self.t().db.flush()?;
        Ok(secret)
    }

    /// Stores (or refreshes) a subscription of `key`, dropping its oldest past
    /// [`MAX_SUBSCRIPTIONS_PER_KEY`]. Durable with the next commit.
    pub fn put_push_subscription(
        &self,
        key: &PublicKey,
        subscription: &PushSubscriptionRecord,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().key_pushsub.insert(
            keys::push_subscription_key(key, &subscription.endpoint),
            encode(subscription),
        )?;
        let mut all: Vec<(sled::IVec, PushSubscriptionRecord)> = Vec::new();
        for item in self.t().key_pushsub.scan_prefix(key.0) {
            let (k, v) = item?;
            all.push((k, decode("key_pushsub", &v)?));
        }
        if all.len() > MAX_SUBSCRIPTIONS_PER_KEY {
            all.sort_by_key(|(_, s)| s.created_ms);
            for (k, _) in &all[..all.len() - MAX_SUBSCRIPTIONS_PER_KEY] {
                self.t().key_pushsub.remove(k)?;
            }
        }
        Ok(())
    }

    /// Every subscription of `key`.
    pub fn push_subscriptions(
        &self,
        key: &PublicKey,
    ) -> Result<Vec<PushSubscriptionRecord>, StoreError> {
        self.t()
            .key_pushsub
            .scan_prefix(key.0)
            .map(|item| decode("key_pushsub", &item?.1))
            .collect()
    }

    /// Removes one subscription of `key`; `true` if there was one.
    pub fn remove_push_subscription(
        &self,
        key: &PublicKey,
        endpoint: &str,
    ) -> Result<bool, StoreError> {
        let _writing = self.writing();
        Ok(self
            .t()
            .key_pushsub
            .remove(keys::push_subscription_key(key, endpoint))?
            .is_some())
    }

    /// Removes the subscription of `key` whose endpoint hashes (SHA-256) to
    /// `endpoint_hash` (cluster mode's mirror, which knows only the hash).
    pub fn remove_push_subscription_hashed(
        &self,
        key: &PublicKey,
        endpoint_hash: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let _writing = self.writing();
        let mut at = key.0.to_vec();
        at.extend_from_slice(endpoint_hash);
        Ok(self.t().key_pushsub.remove(at)?.is_some())
    }

    /// Removes every subscription of `key` (erasure).
    pub fn remove_push_subscriptions(&self, key: &PublicKey) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut doomed = Vec::new();
        for item in self.t().key_pushsub.scan_prefix(key.0) {
            doomed.push(item?.0);
        }
        for k in &doomed {
            self.t().key_pushsub.remove(k)?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(endpoint: &str, created_ms: u64) -> PushSubscriptionRecord {
        PushSubscriptionRecord {
            endpoint: endpoint.into(),
            p256dh: "p".into(),
            auth: "a".into(),
            created_ms,
        }
    }

    #[test]
    fn subscriptions_are_kept_per_key_capped_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        store
            .put_push_subscription(&a, &sub("https://p/1", 1))
            .unwrap();
        store
            .put_push_subscription(&a, &sub("https://p/1", 2))
            .unwrap();
        store
            .put_push_subscription(&b, &sub("https://p/2", 1))
            .unwrap();
        assert_eq!(
            store.push_subscriptions(&a).unwrap().len(),
            1,
            "same endpoint: replaced"
        );
        for n in 0..10 {
            store
                .put_push_subscription(&a, &sub(&format!("https://p/x{n}"), 10 + n))
                .unwrap();
        }
        let kept = store.push_subscriptions(&a).unwrap();
        assert_eq!(kept.len(), MAX_SUBSCRIPTIONS_PER_KEY);
        assert!(kept.iter().all(|s| s.created_ms >= 12), "the oldest went");
        assert!(store.remove_push_subscription(&b, "https://p/2").unwrap());
        assert!(!store.remove_push_subscription(&b, "https://p/2").unwrap());
        assert_eq!(
            store.remove_push_subscriptions(&a).unwrap(),
            MAX_SUBSCRIPTIONS_PER_KEY
        );
    }

    #[test]
    fn the_vapid_secret_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.vapid_secret(|| Ok(vec![7; 32])).unwrap();
        let second = store.vapid_secret(|| Ok(vec![8; 32])).unwrap();
        assert_eq!(first, vec![7; 32]);
        assert_eq!(second, first);
    }
}
