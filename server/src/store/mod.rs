//! The store: every byte peerhub keeps on disk, behind one narrow interface.
//!
//! Only this module touches sled. Callers write with the methods below (each write is
//! in memory until a commit) and make writes durable with [`Committer::commit`],
//! which groups many writers' commits into one `flush`. **Nothing may be
//! acknowledged to a client before the commit covering it has returned.**
//!
//! The interface is kept small and engine-neutral (records in, records out, a
//! commit) so that another embedded engine could replace sled: sled 0.34 is beta.
//! Tree layouts are in [`keys`]; record types in [`records`].

pub mod audit;
pub mod backup;
mod commit;
pub mod compact;
pub mod compact_due;
pub mod erase;
pub mod export;
pub mod keys;
pub mod pager;
pub mod push;
pub mod records;
pub mod retention;
pub mod steps;

use std::path::Path;

use peerhub_protocol::frame::{Channel, Role};
use peerhub_protocol::{GroupId, PublicKey};
use serde::{de::DeserializeOwned, Serialize};

pub use commit::{Committer, FaultWatch};
use peerhub_protocol::escalation::RotaEntry;
use records::{
    AccountRecord, EscalationRecord, GroupRecord, GroupStateRecord, InviteRecord, MemberRecord,
    RecordRecord, StoredEvent,
};

/// The file beside the database recording how many group commits were durable.
const MARK: &str = "store.mark";

/// The store's default in-memory cache.
pub const DEFAULT_CACHE_BYTES: u64 = 512 * 1024 * 1024;

/// Least time between the starts of two group commits unless configured
/// (`store.commit_interval_us`; see [`Committer`]).
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_micros(1000);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine reported an I/O or corruption error.
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("stored record in {tree} is unreadable: {reason}")]
    Corrupt {
        /// The tree it was in.
        tree: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The committer thread is gone (the server is stopping).
    #[error("the store is closed")]
    Closed,
    /// An earlier flush failed, so nothing more is made durable (see
    /// [`Committer`]) until peerhub restarts.
    #[error("the store stopped writing after a storage fault: {}", .0.as_str())]
    Faulted(StoreFault),
    /// Cluster mode: the group's replicated log did not take a commit (this node
    /// lost the group, or the NATS cluster did not answer), so nothing of it was
    /// acknowledged.
    #[error("the group's cluster log did not take the write: {0}")]
    Replication(String),
}

/// Why the store stopped writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The disk is full (`ENOSPC`, or a quota: `EDQUOT`).
    DiskFull,
    /// Any other write or `fsync` failure (`EIO`, ...).
    WriteFailed,
    /// A compaction failed after marking its copy whole (see [`compact`]): the
    /// next start finishes it, so nothing written since may be acknowledged.
    CompactionFailed,
}

impl StoreFault {
    /// Which fault `error` is.
    pub fn of(error: &StoreError) -> Self {
        let io = match error {
            StoreError::Engine(sled::Error::Io(io)) => Some(io),
            StoreError::Faulted(fault) => return *fault,
            _ => None,
        };
        match io {
            Some(io) if matches!(io.raw_os_error(), Some(28) | Some(122)) => Self::DiskFull,
            Some(io) if io.kind() == std::io::ErrorKind::StorageFull => Self::DiskFull,
            _ => Self::WriteFailed,
        }
    }

    /// Its name in logs, metrics and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::WriteFailed => "write_failed",
            Self::CompactionFailed => "compaction_failed",
        }
    }
}

/// Can `dir` take a write made durable now? Writes (positioned, as the engine
/// writes its log), `fsync`s and removes a small file beside the database
/// (`write-probe`).
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join("write-probe");
    let result = (|| {
        let file = std::fs::File::create(&path)?;
        file.write_all_at(&[0u8; 64 * 1024], 0)?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

impl StoreError {
    /// Did the engine find its files damaged (a checksum that does not match, a
    /// record it cannot read)?
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Self::Engine(sled::Error::Corruption { .. })
                | Self::Engine(sled::Error::Unsupported(_))
        ) || matches!(self, Self::Corrupt { tree, .. } if *tree != "compaction")
    }

    /// Is this a failure of the disk underneath (rather than a bad record or a
    /// stopping server)? Those answer `storage_unavailable`.
    pub fn is_storage_fault(&self) -> bool {
        matches!(
            self,
            Self::Faulted(_) | Self::Engine(sled::Error::Io(_)) | Self::Replication(_)
        )
    }
}

/// The hub's secrets ([`Store::access_code_secret`], [`Store::hub_signing_seed`],
/// the VAPID key, the escalation references' secret): made once per store on one node; in cluster
/// mode every node holds the cluster's (an access code set on one node opens the
/// group on every node, and every node signs as the same hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubSecret {
    /// The HMAC key of access codes.
    AccessCode,
    /// The hub's Ed25519 seed (audit entries it signs, pager bodies, VAPID).
    SigningSeed,
    /// The hub's VAPID key (Web Push): a subscription a phone made through one
    /// node is sent to by whichever node leads the router.
    Vapid,
    /// The secret behind flaggers' escalation references: a reference stays
    /// the same whichever node leads the router.
    EscalationReference,
}

impl HubSecret {
    /// Its name in `meta`.
    pub fn meta_name(self) -> &'static str {
        match self {
            Self::AccessCode => "access_code_secret",
            Self::SigningSeed => "hub_signing_seed",
            Self::Vapid => "vapid_secret",
            Self::EscalationReference => "escalation_reference_secret",
        }
    }
}

/// Why an invite could not be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRefusal {
    /// No such token.
    Unknown,
    /// Already redeemed.
    Used,
    /// Past its expiry.
    Expired,
}

/// The database and its named trees.
///
/// Cheap to clone: every clone shares the same open database, which
/// [`Store::compact`] may replace by a rewritten copy while the hub runs (see
/// [`compact`]). A method reads the current trees at each use, so it never holds
/// the database across a replacement longer than one call.
#[derive(Clone)]
pub struct Store {
    /// The open database. Who: every method reads it (a brief read lock to clone
    /// the `Arc`); only [`Store::compact`] replaces it, holding `gate` alone.
    live: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Trees>>>,
    /// The data folder (the database is its `db` folder).
    dir: std::path::PathBuf,
    /// The cache size it was opened with (a compaction reopens with the same).
    cache_bytes: u64,
    /// The data folder's lock ([`compact::lock_folder`]), released with the last
    /// clone.
    _lock: std::sync::Arc<std::fs::File>,
    /// Every write holds it shared; a backup or a compaction holds it alone, so the
    /// snapshot falls between two writes (the state a crash at that moment would
    /// leave, which recovery handles).
    gate: std::sync::Arc<std::sync::RwLock<()>>,
    /// Set when a compaction failed after marking its copy whole: the next open
    /// swaps that copy in, so nothing written since may be made durable or
    /// acknowledged ([`Store::flush`] refuses). Who: [`Store::compact`] sets it.
    poisoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// One open database and its named trees (see [`keys`] for their layouts).
pub(crate) struct Trees {
    db: sled::Db,
    meta: sled::Tree,
    key_account: sled::Tree,
    key_counter: sled::Tree,
    tokenhash_invite: sled::Tree,
    groupid_group: sled::Tree,
    groupid_key_member: sled::Tree,
    groupid_seq_event: sled::Tree,
    groupid_state: sled::Tree,
    groupid_key_allowed: sled::Tree,
    recordid_record: sled::Tree,
    key_recordid: sled::Tree,
    escid_escalation: sled::Tree,
    escindex_escid: sled::Tree,
    seq_audit: sled::Tree,
    key_pushsub: sled::Tree,
}

impl Trees {
    /// Opens the sled database in `path` and its trees.
    fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        Ok(Self {
            meta: tree("meta")?,
            key_account: tree("key_account")?,
            key_counter: tree("key_counter")?,
            tokenhash_invite: tree("tokenhash_invite")?,
            groupid_group: tree("groupid_group")?,
            groupid_key_member: tree("groupid_key_member")?,
            groupid_seq_event: tree("groupid_seq_event")?,
            groupid_state: tree("groupid_state")?,
            groupid_key_allowed: tree("groupid_key_allowed")?,
            recordid_record: tree("recordid_record")?,
            key_recordid: tree("key_recordid")?,
            escid_escalation: tree("escid_escalation")?,
            escindex_escid: tree("escindex_escid")?,
            seq_audit: tree("seq_audit")?,
            key_pushsub: tree("key_pushsub")?,
            db,
        })
    }

    /// Every tree with its name, in the fixed order digests and backups use.
    pub(crate) fn named(&self) -> [(&'static str, &sled::Tree); 15] {
        [
            ("meta", &self.meta),
            ("key_account", &self.key_account),
            ("key_counter", &self.key_counter),
            ("tokenhash_invite", &self.tokenhash_invite),
            ("groupid_group", &self.groupid_group),
            ("groupid_key_member", &self.groupid_key_member),
            ("groupid_seq_event", &self.groupid_seq_event),
            ("groupid_state", &self.groupid_state),
            ("groupid_key_allowed", &self.groupid_key_allowed),
            ("recordid_record", &self.recordid_record),
            ("key_recordid", &self.key_recordid),
            ("escid_escalation", &self.escid_escalation),
            ("escindex_escid", &self.escindex_escid),
            ("seq_audit", &self.seq_audit),
            ("key_pushsub", &self.key_pushsub),
        ]
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain data; serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

fn escalation_state_byte(status: peerhub_protocol::escalation::EscalationStatus) -> u8 {
    use peerhub_protocol::escalation::EscalationStatus;
    match status {
        EscalationStatus::Open => 0,
        EscalationStatus::Acknowledged => 1,
        EscalationStatus::Resolved => 2,
    }
}

fn escalation_index_keys(record: &EscalationRecord) -> Vec<Vec<u8>> {
    let view = &record.view;
    keys::escalation_index_keys(
        view.id,
        &view.about,
        &record.flaggers,
        escalation_state_byte(view.status),
        view.handler.as_ref(),
    )
}

/// The digest rule: SHA-256 over each tree's name, then its keys and values
/// with their lengths, in key order.
pub(crate) struct StoreDigest(sha2::Sha256);

impl StoreDigest {
    pub(crate) fn new() -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::new())
    }

    pub(crate) fn tree(&mut self, name: &str) {
        use sha2::Digest as _;
        self.0.update(name.as_bytes());
    }

    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) {
        use sha2::Digest as _;
        self.0.update((key.len() as u64).to_be_bytes());
        self.0.update(key);
        self.0.update((value.len() as u64).to_be_bytes());
        self.0.update(value);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        use sha2::Digest as _;
        self.0.finalize().into()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default cache (512 MiB).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir`, caching at most `cache_bytes` in
    /// memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        // A compaction cut short by a crash is finished or undone first, by the
        // folder's owner only.
        let lock = compact::lock_folder(dir)?;
        compact::recover(dir)?;
        let trees = Trees::open(&dir.join("db"), cache_bytes)?;
        if trees.meta.get("schema")?.is_none() {
            trees.meta.insert("schema", "1")?;
            trees.db.flush()?;
        }
        let store = Self {
            live: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(trees))),
            dir: dir.to_path_buf(),
            cache_bytes,
            _lock: std::sync::Arc::new(lock),
            gate: Default::default(),
            poisoned: Default::default(),
        };
        store.index_escalations_if_missing()?;
        Ok(store)
    }

    /// The open database's trees, as they are now.
    pub(crate) fn t(&self) -> std::sync::Arc<Trees> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A SHA-256 over every tree's keys and values, in a fixed order: equal digests
    /// mean equal stored state (tests use it to prove a refusal changed nothing).
    pub fn digest(&self) -> Result<[u8; 32], StoreError> {
        let mut digest = StoreDigest::new();
        for (name, tree) in self.t().named() {
            digest.tree(name);
            for item in tree.iter() {
                let (key, value) = item?;
                digest.entry(&key, &value);
            }
        }
        Ok(digest.finish())
    }

    /// [`Store::digest`], leaving out the entries `leave_out` picks (given the
    /// tree's name and the entry's value): the content digest of a backup
    /// (`backup.rs`), for a store that is not being copied.
    pub fn content_digest(&self, leave_out: backup::LeaveOut<'_>) -> Result<[u8; 32], StoreError> {
        let mut digest = StoreDigest::new();
        for (name, tree) in self.t().named() {
            digest.tree(name);
            for item in tree.iter() {
                let (key, value) = item?;
                if !leave_out(name, &key, &value) {
                    digest.entry(&key, &value);
                }
            }
        }
        Ok(digest.finish())
    }

    /// Held by every write (see `gate`).
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's size on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.t().db.size_on_disk()?)
    }

    /// Counts one more group commit in the store (`meta.commits`), to be made
    /// durable by the flush that follows. Only the committer calls it.
    pub(crate) fn count_commit(&self) -> Result<u64, StoreError> {
        let _writing = self.writing();
        let trees = self.t();
        let n = self.commits()? + 1;
        trees.meta.insert("commits", &n.to_be_bytes())?;
        Ok(n)
    }

    /// Group commits counted in the store (0 for a store from before the count).
    pub fn commits(&self) -> Result<u64, StoreError> {
        Ok(self
            .t()
            .meta
            .get("commits")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Records, outside the engine's files, that `commits` group commits were made
    /// durable (`store.mark`, replaced atomically). At the next start the store
    /// must hold at least that many ([`Store::check_mark`]): an engine that
    /// silently dropped part of its log (a damaged file) holds fewer.
    pub(crate) fn write_mark(&self, commits: u64) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (tmp, mark) = (self.dir.join("store.mark.tmp"), self.dir.join(MARK));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(commits.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &mark)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Checks the store against `store.mark` (see [`Store::write_mark`]); `Err`
    /// says what is missing, in words.
    pub fn check_mark(&self) -> Result<(), String> {
        let marked = match std::fs::read_to_string(self.dir.join(MARK)) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{MARK} is unreadable"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{MARK} cannot be read: {e}")),
        };
        let held = self
            .commits()
            .map_err(|e| format!("the commit count cannot be read: {e}"))?;
        if held < marked {
            return Err(format!(
                "it holds {held} group commits but {marked} were made durable and \
                 acknowledged: the storage engine dropped part of its log"
            ));
        }
        Ok(())
    }

    /// The fault that makes this store refuse to make writes durable, if any
    /// (today: a compaction that failed after marking its copy whole).
    pub fn fault(&self) -> Option<StoreFault> {
        self.poisoned
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(StoreFault::CompactionFailed)
    }

    /// Makes every write so far durable. Prefer [`Committer::commit`], which shares
    /// one flush between concurrent writers.
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Faulted(StoreFault::CompactionFailed));
        }
        self.t().db.flush()?;
        Ok(())
    }

    // ---- accounts and roles ----

    /// The account of a key, if it holds any role.
    pub fn account(&self, key: &PublicKey) -> Result<Option<AccountRecord>, StoreError> {
        self.t()
            .key_account
            .get(key.0)?
            .map(|v| decode("key_account", &v))
            .transpose()
    }

    /// Roles a key holds (empty for a participant).
    pub fn roles(&self, key: &PublicKey) -> Result<Vec<Role>, StoreError> {
        Ok(self.account(key)?.map(|a| a.roles).unwrap_or_default())
    }

    /// Grants `role` to `key` (idempotent); returns the account after the grant.
    pub fn grant_role(
        &self,
        key: &PublicKey,
        role: Role,
        now_ms: u64,
    ) -> Result<AccountRecord, StoreError> {
        let _writing = self.writing();
        let mut account = self
            .account(key)?
            .unwrap_or_else(|| AccountRecord::new(now_ms));
        account.grant_role(role);
        self.t().key_account.insert(key.0, encode(&account))?;
        Ok(account)
    }

    /// Sets the staff name of a key that holds a role (the name given at redeem).
    pub fn set_account_name(&self, key: &PublicKey, name: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        if let Some(mut account) = self.account(key)? {
            account.name = Some(name.to_string());
            self.t().key_account.insert(key.0, encode(&account))?;
        }
        Ok(())
    }

    /// Every key holding a role, with its account (admins' staff list; bounded by
    /// the number of staff, never by participants).
    pub fn staff_accounts(&self) -> Result<Vec<(PublicKey, AccountRecord)>, StoreError> {
        let mut staff = Vec::new();
        for item in self.t().key_account.iter() {
            let (key, value) = item?;
            let account: AccountRecord = decode("key_account", &value)?;
            if let (false, Ok(bytes)) =
                (account.roles.is_empty(), <[u8; 32]>::try_from(key.as_ref()))
            {
                staff.push((PublicKey(bytes), account));
            }
        }
        Ok(staff)
    }

    /// Whether `key` is a facilitator of `group` (holds a grant for it).
    pub fn facilitates(&self, key: &PublicKey, group: &GroupId) -> Result<bool, StoreError> {
        Ok(self
            .account(key)?
            .is_some_and(|a| a.roles.contains(&Role::Facilitator) && a.facilitates.contains(group)))
    }

    /// Grants `key` the facilitator role and standing in each of `groups`
    /// (idempotent); returns the account after the grant.
    pub fn grant_facilitator(
        &self,
        key: &PublicKey,
        groups: &[GroupId],
        now_ms: u64,
    ) -> Result<AccountRecord, StoreError> {
        let _writing = self.writing();
        let mut account = self
            .account(key)?
            .unwrap_or_else(|| AccountRecord::new(now_ms));
        account.grant_facilitator(groups);
        self.t().key_account.insert(key.0, encode(&account))?;
        Ok(account)
    }

    /// Takes `key`'s facilitator standing in `group` away (the role stays, for
    /// its other groups); returns whether it held one.
    pub fn revoke_facilitator(&self, key: &PublicKey, group: &GroupId) -> Result<bool, StoreError> {
        let _writing = self.writing();
        let Some(mut account) = self.account(key)? else {
            return Ok(false);
        };
        if !account.revoke_facilitator(group) {
            return Ok(false);
        }
        self.t().key_account.insert(key.0, encode(&account))?;
        Ok(true)
    }

    /// Whether the one-off migration named `marker` has run (a `meta` entry).
    pub fn migrated(&self, marker: &str) -> Result<bool, StoreError> {
        Ok(self.t().meta.contains_key(marker)?)
    }

    /// Writes `accounts` and the `meta` marker of their migration in one atomic
    /// batch: after a crash either all of it is there or none (then the
    /// migration runs again at the next start). Not yet durable: flush.
    pub fn put_accounts_migrated(
        &self,
        accounts: &[(PublicKey, AccountRecord)],
        marker: &str,
    ) -> Result<(), StoreError> {
        use sled::transaction::TransactionError;
        use sled::Transactional as _;
        let _writing = self.writing();
        let trees = self.t();
        let encoded: Vec<([u8; 32], Vec<u8>)> = accounts
            .iter()
            .map(|(key, account)| (key.0, encode(account)))
            .collect();
        (&trees.key_account, &trees.meta)
            .transaction(|(key_account, meta)| {
                for (key, value) in &encoded {
                    key_account.insert(&key[..], value.as_slice())?;
                }
                meta.insert(marker.as_bytes(), &b"1"[..])?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::Engine(e),
                TransactionError::Abort(()) => StoreError::Closed,
            })
    }

    /// Every account, by key (operator jobs and start-up migrations only).
    pub fn accounts(&self) -> Result<Vec<(PublicKey, AccountRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t().key_account.iter() {
            let (key, value) = item?;
            if let Ok(bytes) = <[u8; 32]>::try_from(key.as_ref()) {
                out.push((PublicKey(bytes), decode("key_account", &value)?));
            }
        }
        Ok(out)
    }

    /// Whether any key holds the admin role.
    pub fn has_admin(&self) -> Result<bool, StoreError> {
        for item in self.t().key_account.iter() {
            let (_, value) = item?;
            let account: AccountRecord = decode("key_account", &value)?;
            if account.roles.contains(&Role::Admin) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ---- replay counters ----

    /// The last counter accepted from `key` (0 if none).
    pub fn counter(&self, key: &PublicKey) -> Result<u64, StoreError> {
        Ok(self
            .t()
            .key_counter
            .get(key.0)?
            .map(|v| keys::counter_from(&v))
            .unwrap_or(0))
    }

    /// Raises the stored counter of `key` to at least `counter`. Atomic, so group
    /// tasks writing the same key's counter concurrently never lower it.
    pub fn raise_counter(&self, key: &PublicKey, counter: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().key_counter.fetch_and_update(key.0, |old| {
            let old = old.map(keys::counter_from).unwrap_or(0);
            Some(keys::counter_bytes(old.max(counter)).to_vec())
        })?;
        Ok(())
    }

    // ---- invites ----

    /// Stores an invite under the hash of its token.
    pub fn put_invite(
        &self,
        token_hash: [u8; 32],
        invite: &InviteRecord,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .tokenhash_invite
            .insert(token_hash, encode(invite))?;
        Ok(())
    }

    /// Removes unredeemed bootstrap invites (a new one is made at each start).
    pub fn remove_unused_bootstrap_invites(&self) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut removed = 0;
        for item in self.t().tokenhash_invite.iter() {
            let (hash, value) = item?;
            let invite: InviteRecord = decode("tokenhash_invite", &value)?;
            if invite.bootstrap && invite.used_by.is_none() {
                self.t().tokenhash_invite.remove(hash)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Marks an invite used by `key`, exactly once even under concurrent attempts.
    pub fn redeem_invite(
        &self,
        token_hash: [u8; 32],
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Result<InviteRecord, RedeemRefusal>, StoreError> {
        let _writing = self.writing();
        loop {
            let Some(current) = self.t().tokenhash_invite.get(token_hash)? else {
                return Ok(Err(RedeemRefusal::Unknown));
            };
            let invite: InviteRecord = decode("tokenhash_invite", &current)?;
            if invite.used_by == Some(*key) {
                // The same key asking again (its first answer was lost): same answer.
                return Ok(Ok(invite));
            }
            if invite.used_by.is_some() {
                return Ok(Err(RedeemRefusal::Used));
            }
            if now_ms > invite.expires_ms {
                return Ok(Err(RedeemRefusal::Expired));
            }
            let used = InviteRecord {
                used_by: Some(*key),
                used_ms: Some(now_ms),
                ..invite
            };
            let swapped = self.t().tokenhash_invite.compare_and_swap(
                token_hash,
                Some(current),
                Some(encode(&used)),
            )?;
            if swapped.is_ok() {
                return Ok(Ok(used));
            }
        }
    }

    // ---- groups ----

    /// Creates a group; `false` if the id is taken.
    pub fn create_group(&self, group: &GroupRecord) -> Result<bool, StoreError> {
        let _writing = self.writing();
        let swapped = self.t().groupid_group.compare_and_swap(
            group.id.as_str(),
            None as Option<&[u8]>,
            Some(encode(group)),
        )?;
        Ok(swapped.is_ok())
    }

    /// Replaces an existing group's record (settings an operator changed).
    pub fn put_group(&self, group: &GroupRecord) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_group
            .insert(group.id.as_str(), encode(group))?;
        Ok(())
    }

    /// A group by id.
    pub fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.t()
            .groupid_group
            .get(id.as_str())?
            .map(|v| decode("groupid_group", &v))
            .transpose()
    }

    /// Every group, by id.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.t()
            .groupid_group
            .iter()
            .map(|item| decode("groupid_group", &item?.1))
            .collect()
    }

    // ---- members ----

    /// Stores (or replaces) a member record.
    pub fn put_member(&self, group: &GroupId, member: &MemberRecord) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_key_member
            .insert(keys::member_key(group, &member.key), encode(member))?;
        Ok(())
    }

    /// Forgets a member record (a knock on the waiting room that expired or was
    /// cleared).
    pub fn delete_member(&self, group: &GroupId, key: &PublicKey) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_key_member
            .remove(keys::member_key(group, key))?;
        Ok(())
    }

    /// One member of a group (a point read).
    pub fn member_of(
        &self,
        group: &GroupId,
        key: &PublicKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.t()
            .groupid_key_member
            .get(keys::member_key(group, key))?
            .map(|v| decode("groupid_key_member", &v))
            .transpose()
    }

    /// Every member of a group.
    pub fn members(&self, group: &GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.t()
            .groupid_key_member
            .scan_prefix(keys::group_prefix(group))
            .map(|item| decode("groupid_key_member", &item?.1))
            .collect()
    }

    /// Marks `key` as invited to a virtual group.
    pub fn allow_member(&self, group: &GroupId, key: &PublicKey) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_key_allowed
            .insert(keys::member_key(group, key), &[])?;
        Ok(())
    }

    /// Whether `key` was invited to a virtual group.
    pub fn is_allowed(&self, group: &GroupId, key: &PublicKey) -> Result<bool, StoreError> {
        Ok(self
            .t()
            .groupid_key_allowed
            .contains_key(keys::member_key(group, key))?)
    }

    // ---- group state ----

    /// A group's mutable state, if it has been written.
    pub fn group_state(&self, group: &GroupId) -> Result<Option<GroupStateRecord>, StoreError> {
        self.t()
            .groupid_state
            .get(group.as_str())?
            .map(|v| decode("groupid_state", &v))
            .transpose()
    }

    /// Writes a group's state (durable with the next commit).
    pub fn put_group_state(
        &self,
        group: &GroupId,
        state: &GroupStateRecord,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_state
            .insert(group.as_str(), encode(state))?;
        Ok(())
    }

    // ---- cluster replica ----

    /// The last record of `group`'s cluster log applied to this store, as its
    /// group seq and stream sequence; `(0, 0)` if none (cluster mode only).
    pub fn replica_applied(&self, group: &GroupId) -> Result<(u64, u64), StoreError> {
        let Some(value) = self.t().meta.get(replica_key(group))? else {
            return Ok((0, 0));
        };
        match <[u8; 16]>::try_from(value.as_ref()) {
            Ok(bytes) => Ok((
                keys::counter_from(&bytes[..8]),
                keys::counter_from(&bytes[8..]),
            )),
            Err(_) => Err(StoreError::Corrupt {
                tree: "meta",
                reason: "replica mark is not 16 bytes".into(),
            }),
        }
    }

    /// Records that `group`'s cluster log is applied up to `seq` (stream sequence
    /// `stream_seq`); durable with the next flush, like the writes it follows.
    pub fn put_replica_applied(
        &self,
        group: &GroupId,
        seq: u64,
        stream_seq: u64,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&keys::counter_bytes(seq));
        value[8..].copy_from_slice(&keys::counter_bytes(stream_seq));
        self.t().meta.insert(replica_key(group), &value[..])?;
        Ok(())
    }

    /// Forgets this store's copy of `group`'s replicated records — its events,
    /// state, member records and replica mark — so that it can be rebuilt from the
    /// cluster's log (a node whose append was refused may hold writes the log does
    /// not). Not yet durable: flush. Returns how many records went.
    pub fn forget_replica(&self, group: &GroupId) -> Result<usize, StoreError> {
        let mut gone = self.delete_events(group, None)?;
        let _writing = self.writing();
        let trees = self.t();
        if trees.groupid_state.remove(group.as_str())?.is_some() {
            gone += 1;
        }
        for item in trees
            .groupid_key_member
            .scan_prefix(keys::group_prefix(group))
        {
            let (key, _) = item?;
            trees.groupid_key_member.remove(key)?;
            gone += 1;
        }
        trees.meta.remove(replica_key(group))?;
        Ok(gone)
    }

    /// Writes `key`'s account as the cluster's directory holds it (the mirror of
    /// cluster mode; the one-node hub changes accounts through the methods above).
    pub fn put_account(&self, key: &PublicKey, account: &AccountRecord) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().key_account.insert(key.0, encode(account))?;
        Ok(())
    }

    /// Removes `key`'s account (the directory's removed it; cluster mode's mirror).
    pub fn remove_account(&self, key: &PublicKey) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().key_account.remove(key.0)?;
        Ok(())
    }

    /// Takes `key` off a virtual group's invited list (cluster mode's mirror).
    pub fn disallow_member(&self, group: &GroupId, key: &PublicKey) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_key_allowed
            .remove(keys::member_key(group, key))?;
        Ok(())
    }

    /// How far this store mirrors the cluster's `what` (a bucket's stream
    /// sequence; 0: not at all).
    pub fn mirror_applied(&self, what: &str) -> Result<u64, StoreError> {
        Ok(self
            .t()
            .meta
            .get(format!("mirror_applied/{what}"))?
            .map(|v| keys::counter_from(&v))
            .unwrap_or(0))
    }

    /// Whether this store was a cluster node's (it holds a mark of the
    /// directory's mirror, a group log's replica or the router's log): its data
    /// is a copy of what NATS holds, and changing it alone changes nothing
    /// there (erasure refuses such a folder).
    pub fn holds_cluster_copies(&self) -> Result<bool, StoreError> {
        let meta = &self.t().meta;
        for prefix in ["mirror_applied/", "replica_applied/", ROUTER_APPLIED] {
            if meta.scan_prefix(prefix).next().transpose()?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records how far this store mirrors `what`.
    pub fn put_mirror_applied(&self, what: &str, stream_seq: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().meta.insert(
            format!("mirror_applied/{what}"),
            &keys::counter_bytes(stream_seq)[..],
        )?;
        Ok(())
    }

    // ---- events ----

    /// Writes (or rewrites, for a redaction) one event. The caller (the group's
    /// task) owns seq assignment.
    pub fn put_event(
        &self,
        group: &GroupId,
        channel: &Channel,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .groupid_seq_event
            .insert(keys::event_key(group, channel, event.seq), encode(event))?;
        Ok(())
    }

    /// One event, if it is (still) stored.
    pub fn event(
        &self,
        group: &GroupId,
        channel: &Channel,
        seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        self.t()
            .groupid_seq_event
            .get(keys::event_key(group, channel, seq))?
            .map(|v| decode("groupid_seq_event", &v))
            .transpose()
    }

    /// The highest seq stored in a channel (0 if none). Used only when a group has
    /// no state record yet; afterwards the state's heads are the authority.
    pub fn last_seq(&self, group: &GroupId, channel: &Channel) -> Result<u64, StoreError> {
        match self
            .t()
            .groupid_seq_event
            .scan_prefix(keys::channel_prefix(group, channel))
            .next_back()
        {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item?;
                keys::seq_of_event_key(&key).ok_or(StoreError::Corrupt {
                    tree: "groupid_seq_event",
                    reason: "key without a seq".into(),
                })
            }
        }
    }

    /// The lowest seq still stored in a channel, if any.
    pub fn first_seq(&self, group: &GroupId, channel: &Channel) -> Result<Option<u64>, StoreError> {
        match self
            .t()
            .groupid_seq_event
            .scan_prefix(keys::channel_prefix(group, channel))
            .next()
        {
            None => Ok(None),
            Some(item) => Ok(keys::seq_of_event_key(&item?.0)),
        }
    }

    /// Up to `limit` events of a channel with `after < seq <= up_to`, in order.
    pub fn events_between(
        &self,
        group: &GroupId,
        channel: &Channel,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let start = keys::event_key(group, channel, after.saturating_add(1));
        let end = keys::event_key(group, channel, up_to);
        self.t()
            .groupid_seq_event
            .range(start..=end)
            .take(limit)
            .map(|item| decode("groupid_seq_event", &item?.1))
            .collect()
    }

    /// Deletes a group's events (every channel) ordered before `before_ms`, or all
    /// of them; returns how many. Seqs are never reused: the group state keeps the
    /// heads.
    pub fn delete_events(
        &self,
        group: &GroupId,
        before_ms: Option<u64>,
    ) -> Result<usize, StoreError> {
        let _writing = self.writing();
        let mut doomed = Vec::new();
        for item in self
            .t()
            .groupid_seq_event
            .scan_prefix(keys::group_prefix(group))
        {
            let (key, value) = item?;
            let keep = match before_ms {
                None => false,
                Some(cutoff) => decode::<StoredEvent>("groupid_seq_event", &value)?.ts >= cutoff,
            };
            if !keep {
                doomed.push(key);
            }
        }
        for key in &doomed {
            self.t().groupid_seq_event.remove(key)?;
        }
        Ok(doomed.len())
    }

    // ---- escalations and the rota ----

    /// A fresh escalation id (unique, increasing).
    pub fn next_escalation_id(&self) -> Result<u64, StoreError> {
        let _writing = self.writing();
        let generated = self.t().db.generate_id()? + 1;
        // Above every escalation this store holds, too: in cluster mode a node
        // that takes the router over holds escalations other nodes numbered.
        let highest = match self.t().escid_escalation.last()? {
            Some((key, _)) => keys::counter_from(&key),
            None => 0,
        };
        // And above every one it ever held: retention deletes resolved ones, and
        // an id used again would find the old one's routing steps marked done
        // (no page, no push for the new one) and its entries in the audit chain.
        Ok(generated
            .max(highest + 1)
            .max(self.escalation_id_high()? + 1))
    }

    /// The highest escalation id this store ever held (0: none): raised by
    /// every [`Store::put_escalation`], never lowered, kept when retention
    /// deletes the escalation.
    pub fn escalation_id_high(&self) -> Result<u64, StoreError> {
        match self.t().meta.get(ESCALATION_ID_HIGH)? {
            None => Ok(0),
            Some(value) if value.len() == 8 => Ok(keys::counter_from(&value)),
            Some(_) => Err(StoreError::Corrupt {
                tree: "meta",
                reason: "the highest escalation id is not 8 bytes".into(),
            }),
        }
    }

    /// How far this store has applied the router's cluster log: the last record
    /// and its stream sequence ((0, 0) for none).
    pub fn router_applied(&self) -> Result<(u64, u64), StoreError> {
        let Some(value) = self.t().meta.get(ROUTER_APPLIED)? else {
            return Ok((0, 0));
        };
        match <[u8; 16]>::try_from(value.as_ref()) {
            Ok(bytes) => Ok((
                keys::counter_from(&bytes[..8]),
                keys::counter_from(&bytes[8..]),
            )),
            Err(_) => Err(StoreError::Corrupt {
                tree: "meta",
                reason: "router log mark is not 16 bytes".into(),
            }),
        }
    }

    /// Records that the router's cluster log is applied up to `seq`.
    pub fn put_router_applied(&self, seq: u64, stream_seq: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&keys::counter_bytes(seq));
        value[8..].copy_from_slice(&keys::counter_bytes(stream_seq));
        self.t().meta.insert(ROUTER_APPLIED, &value[..])?;
        Ok(())
    }

    /// Writes an escalation and its index entries together (durable with the next
    /// commit).
    pub fn put_escalation(&self, record: &EscalationRecord) -> Result<(), StoreError> {
        use sled::transaction::TransactionError;
        use sled::Transactional as _;
        let _writing = self.writing();
        let trees = self.t();
        let id = record.view.id;
        let old = self.escalation(id)?;
        let remove = old.as_ref().map(escalation_index_keys).unwrap_or_default();
        let add = escalation_index_keys(record);
        let value = encode(record);
        (&trees.escid_escalation, &trees.escindex_escid, &trees.meta)
            .transaction(|(escalations, index, meta)| {
                for key in remove.iter().filter(|k| !add.contains(k)) {
                    index.remove(key.as_slice())?;
                }
                for key in &add {
                    index.insert(key.as_slice(), &[] as &[u8])?;
                }
                escalations.insert(&id.to_be_bytes(), value.as_slice())?;
                raise_id_high(meta, id)
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::Engine(e),
                TransactionError::Abort(()) => StoreError::Closed,
            })
    }

    /// One escalation by id.
    pub fn escalation(&self, id: u64) -> Result<Option<EscalationRecord>, StoreError> {
        self.t()
            .escid_escalation
            .get(id.to_be_bytes())?
            .map(|v| decode("escid_escalation", &v))
            .transpose()
    }

    fn escalation_ids(&self, prefix: &[u8]) -> Result<Vec<u64>, StoreError> {
        self.t()
            .escindex_escid
            .scan_prefix(prefix)
            .keys()
            .map(|key| {
                let key = key?;
                keys::escalation_id_of_index_key(&key).ok_or(StoreError::Corrupt {
                    tree: "escindex_escid",
                    reason: "index key without an id".into(),
                })
            })
            .collect()
    }

    /// The ids of every escalation about `key`, oldest first (an index read).
    pub fn escalation_ids_about(&self, key: &PublicKey) -> Result<Vec<u64>, StoreError> {
        self.escalation_ids(&keys::escalation_key_prefix(keys::ESC_BY_SUBJECT, key))
    }

    /// The ids of every escalation `key` raised a flag in, oldest first.
    pub fn escalation_ids_flagged_by(&self, key: &PublicKey) -> Result<Vec<u64>, StoreError> {
        self.escalation_ids(&keys::escalation_key_prefix(keys::ESC_BY_FLAGGER, key))
    }

    /// The ids of every escalation supervisor `key` has (or had), oldest first.
    pub fn escalation_ids_handled_by(&self, key: &PublicKey) -> Result<Vec<u64>, StoreError> {
        self.escalation_ids(&keys::escalation_key_prefix(keys::ESC_BY_HANDLER, key))
    }

    /// Every unresolved escalation, oldest first, read through the state index
    /// (resolved ones, kept for years, are never read).
    pub fn unresolved_escalations(&self) -> Result<Vec<EscalationRecord>, StoreError> {
        let mut ids = self.escalation_ids(&keys::escalation_state_prefix(0))?;
        ids.extend(self.escalation_ids(&keys::escalation_state_prefix(1))?);
        ids.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.escalation(id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Every escalation, oldest first: a full scan, for operator jobs and tests
    /// only (never on a request path).
    pub fn escalations(&self) -> Result<Vec<EscalationRecord>, StoreError> {
        self.t()
            .escid_escalation
            .iter()
            .map(|item| decode("escid_escalation", &item?.1))
            .collect()
    }

    /// Forgets every escalation, its index entries and its routing steps' marks
    /// (a cluster node's copy starting again from a rebase of the router's log,
    /// `cluster::router_log`); the highest id ever held stays. Durable with the
    /// next commit.
    pub fn forget_escalations(&self) -> Result<(), StoreError> {
        let _writing = self.writing();
        let trees = self.t();
        trees.escid_escalation.clear()?;
        trees.escindex_escid.clear()?;
        for item in trees.meta.scan_prefix(steps::PREFIX) {
            let (key, _) = item?;
            trees.meta.remove(key)?;
        }
        Ok(())
    }

    /// Raises the highest escalation id ever held to `id` (never lowers it).
    pub fn raise_escalation_id_high(&self, id: u64) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .meta
            .transaction(|meta| raise_id_high(meta, id))
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Engine(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Closed,
            })
    }

    /// Builds the escalation index when escalations exist without one (a store or
    /// backup from before the index): once, at open.
    pub(crate) fn index_escalations_if_missing(&self) -> Result<(), StoreError> {
        // Built once, whole: a marker in `meta` says so, set only after every
        // entry is written and flushed. A build a crash cut short (entries but no
        // marker) is started again from nothing, never trusted half-made.
        const BUILT: &str = "escindex_built";
        if self.t().meta.get(BUILT)?.is_some() {
            return Ok(());
        }
        let _writing = self.writing();
        self.t().escindex_escid.clear()?;
        let mut indexed = 0usize;
        for item in self.t().escid_escalation.iter() {
            let (_, value) = item?;
            let record: EscalationRecord = decode("escid_escalation", &value)?;
            for key in escalation_index_keys(&record) {
                self.t().escindex_escid.insert(key, &[] as &[u8])?;
            }
            indexed += 1;
        }
        self.t().db.flush()?;
        self.t().meta.insert(BUILT, &[1u8] as &[u8])?;
        self.t().db.flush()?;
        if indexed > 0 {
            tracing::info!(escalations = indexed, "escalation index built");
        }
        Ok(())
    }

    /// The hub's secret for escalation references (made once): see
    /// `escalation::reference`.
    pub fn escalation_reference_secret(&self) -> Result<[u8; 32], StoreError> {
        self.meta_secret("escalation_reference_secret")
    }

    /// Removes the index entries of an escalation that retention deleted.
    pub(crate) fn unindex_escalation(&self, record: &EscalationRecord) -> Result<(), StoreError> {
        for key in escalation_index_keys(record) {
            self.t().escindex_escid.remove(key)?;
        }
        Ok(())
    }

    /// The on-call rota (empty if never set).
    pub fn rota(&self) -> Result<Vec<RotaEntry>, StoreError> {
        self.t()
            .meta
            .get("rota")?
            .map(|v| decode("meta", &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Replaces the rota (durable with the next commit).
    pub fn put_rota(&self, rota: &[RotaEntry]) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().meta.insert("rota", encode(&rota))?;
        Ok(())
    }

    /// Every key holding one of `roles`.
    pub fn keys_with_roles(&self, roles: &[Role]) -> Result<Vec<PublicKey>, StoreError> {
        let mut keys = Vec::new();
        for item in self.t().key_account.iter() {
            let (key, value) = item?;
            let account: AccountRecord = decode("key_account", &value)?;
            if account.roles.iter().any(|r| roles.contains(r)) {
                if let Ok(bytes) = <[u8; 32]>::try_from(key.as_ref()) {
                    keys.push(PublicKey(bytes));
                }
            }
        }
        Ok(keys)
    }

    /// The hub's secret for access codes (made once): they are kept only as
    /// HMAC-SHA256 under it, so the stored form cannot be tried against a list of
    /// likely codes without it. Lives beside the signing seed, in the same
    /// owner-only folder, and travels with a backup.
    pub fn access_code_secret(&self) -> Result<[u8; 32], StoreError> {
        self.meta_secret(HubSecret::AccessCode.meta_name())
    }

    /// The hub's own signing seed (made once), for the pager hook's signed bodies.
    pub fn hub_signing_seed(&self) -> Result<[u8; 32], StoreError> {
        self.meta_secret(HubSecret::SigningSeed.meta_name())
    }

    /// A hub secret as this store holds it, without making one (`None`: not
    /// made yet). Cluster mode's start-up offers it to the cluster.
    pub fn hub_secret(&self, which: HubSecret) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .t()
            .meta
            .get(which.meta_name())?
            .and_then(|seed| <[u8; 32]>::try_from(seed.as_ref()).ok()))
    }

    /// Replaces a hub secret with the one every node of the cluster shares, made
    /// durable at once (it is read before the committer runs).
    pub fn put_hub_secret(&self, which: HubSecret, secret: &[u8; 32]) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t().meta.insert(which.meta_name(), &secret[..])?;
        self.t().db.flush()?;
        Ok(())
    }

    /// 32 random bytes kept under `name` in `meta`, made on first use.
    fn meta_secret(&self, name: &'static str) -> Result<[u8; 32], StoreError> {
        let _writing = self.writing();
        if let Some(seed) = self.t().meta.get(name)? {
            if let Ok(seed) = <[u8; 32]>::try_from(seed.as_ref()) {
                return Ok(seed);
            }
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| StoreError::Corrupt {
            tree: "meta",
            reason: format!("no randomness for {name}: {e}"),
        })?;
        self.t().meta.insert(name, &seed)?;
        self.t().db.flush()?;
        Ok(seed)
    }

    // ---- co-produced records ----

    /// A fresh record id (unique, increasing; not gap-free).
    pub fn next_record_id(&self) -> Result<u64, StoreError> {
        let _writing = self.writing();
        Ok(self.t().db.generate_id()? + 1)
    }

    /// Writes a record and indexes it under the member it is about.
    pub fn put_record(&self, record: &RecordRecord) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.t()
            .recordid_record
            .insert(record.id.to_be_bytes(), encode(record))?;
        if let Some(about) = &record.about {
            self.t()
                .key_recordid
                .insert(keys::record_index_key(about, record.id), &[])?;
        }
        Ok(())
    }

    /// A record by id.
    pub fn record(&self, id: u64) -> Result<Option<RecordRecord>, StoreError> {
        self.t()
            .recordid_record
            .get(id.to_be_bytes())?
            .map(|v| decode("recordid_record", &v))
            .transpose()
    }

    /// The records about `key` with an id after `after`, oldest first, as many as
    /// fit `max_bytes` of entries (as JSON; always at least one), and whether
    /// more follow. Reads only what it returns, plus one index entry.
    pub fn records_about_page(
        &self,
        key: &PublicKey,
        after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<RecordRecord>, bool), StoreError> {
        let start = keys::record_index_key(key, after.saturating_add(1));
        let end = keys::record_index_key(key, u64::MAX);
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.t().key_recordid.range(start..=end) {
            let (index, _) = item?;
            let id = keys::record_id_of_index_key(&index).ok_or(StoreError::Corrupt {
                tree: "key_recordid",
                reason: "key without an id".into(),
            })?;
            let Some(record) = self.record(id)? else {
                continue;
            };
            let size = serde_json::to_vec(&record.entries).map_or(0, |json| json.len());
            if !out.is_empty() && bytes + size > max_bytes {
                return Ok((out, true));
            }
            bytes += size;
            out.push(record);
        }
        Ok((out, false))
    }

    /// Every record about `key`, oldest first.
    pub fn records_about(&self, key: &PublicKey) -> Result<Vec<RecordRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.t().key_recordid.scan_prefix(key.0) {
            let (index, _) = item?;
            let id = keys::record_id_of_index_key(&index).ok_or(StoreError::Corrupt {
                tree: "key_recordid",
                reason: "key without an id".into(),
            })?;
            if let Some(record) = self.record(id)? {
                out.push(record);
            }
        }
        Ok(out)
    }
}

/// The `meta` key of a group's replica mark.
/// The `meta` key of the router log's mark.
const ROUTER_APPLIED: &str = "router_applied";
/// The `meta` key of the highest escalation id ever stored (u64 big-endian).
const ESCALATION_ID_HIGH: &str = "escalation_id_high";

/// Within a transaction on `meta`: raises the highest escalation id ever
/// stored to `id` (never lowers it).
fn raise_id_high(
    meta: &sled::transaction::TransactionalTree,
    id: u64,
) -> sled::transaction::ConflictableTransactionResult<(), ()> {
    let high = meta
        .get(ESCALATION_ID_HIGH)?
        .map_or(0, |v| keys::counter_from(&v));
    if high < id {
        meta.insert(ESCALATION_ID_HIGH, &id.to_be_bytes())?;
    }
    Ok(())
}

fn replica_key(group: &GroupId) -> String {
    format!("replica_applied/{}", group.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerhub_protocol::envelope::{Kind, SignedEnvelope};

    fn env() -> Option<SignedEnvelope> {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        Some(SignedEnvelope::sign(&signer, Kind::Post, "{}".into()))
    }

    fn event(seq: u64, ts: u64) -> StoredEvent {
        StoredEvent {
            seq,
            ts,
            env: env(),
            note: None,
            redacted: None,
        }
    }

    #[test]
    fn events_read_back_in_order_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId::parse("g").unwrap();
        let other = GroupId::parse("g2").unwrap();
        let main = Channel::Main;
        assert_eq!(store.last_seq(&g, &main).unwrap(), 0);
        for seq in 1..=300 {
            store.put_event(&g, &main, &event(seq, seq)).unwrap();
        }
        store.put_event(&other, &main, &event(1, 1)).unwrap();
        store.put_event(&g, &Channel::Staff, &event(1, 1)).unwrap();
        assert_eq!(store.last_seq(&g, &main).unwrap(), 300);
        assert_eq!(store.last_seq(&g, &Channel::Staff).unwrap(), 1);
        let page = store.events_between(&g, &main, 255, 300, 10).unwrap();
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (256..=265).collect::<Vec<_>>());
        assert!(store
            .events_between(&g, &main, 300, 300, 10)
            .unwrap()
            .is_empty());
        // Retention: seqs 1..=100 and the staff event are older than 101.
        assert_eq!(store.delete_events(&g, Some(101)).unwrap(), 101);
        assert_eq!(
            store.events_between(&g, &main, 0, 300, 1000).unwrap().len(),
            200
        );
        assert_eq!(store.delete_events(&g, None).unwrap(), 200);
        assert_eq!(
            store.events_between(&other, &main, 0, 1, 10).unwrap().len(),
            1,
            "other group kept"
        );
    }

    #[test]
    fn records_are_listed_for_the_member_they_are_about() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId::parse("g").unwrap();
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        for about in [Some(a), Some(b), Some(a), None] {
            let id = store.next_record_id().unwrap();
            let record = RecordRecord {
                id,
                group: g.clone(),
                about,
                entries: vec![env().unwrap()],
            };
            store.put_record(&record).unwrap();
        }
        let mine = store.records_about(&a).unwrap();
        assert_eq!(mine.len(), 2);
        assert!(mine.iter().all(|r| r.about == Some(a)));
        assert!(mine[0].id < mine[1].id);
    }

    fn escalation(id: u64, about: PublicKey, status: EscalationStatus) -> EscalationRecord {
        use peerhub_protocol::escalation::{EscalationView, Severity};
        EscalationRecord {
            view: EscalationView {
                id,
                group: GroupId::parse("g").unwrap(),
                about,
                severity: Severity::Urgent,
                status,
                level: 1,
                waiting_for: Vec::new(),
                deadline_ms: None,
                created_ms: 1,
                handler: None,
                flags: vec![env().unwrap()],
                context: Vec::new(),
                steps: Vec::new(),
                outcome: None,
            },
            tell_subject: true,
            flaggers: vec![PublicKey([9; 32])],
            merged: 0,
            counted: 0,
            consent: None,
            name: None,
        }
    }

    use peerhub_protocol::escalation::EscalationStatus;

    #[test]
    fn escalations_are_found_through_the_index_as_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        store
            .put_escalation(&escalation(1, a, EscalationStatus::Open))
            .unwrap();
        store
            .put_escalation(&escalation(2, b, EscalationStatus::Open))
            .unwrap();
        let mut taken = escalation(2, b, EscalationStatus::Acknowledged);
        taken.view.handler = Some(a);
        store.put_escalation(&taken).unwrap();
        store
            .put_escalation(&escalation(1, a, EscalationStatus::Resolved))
            .unwrap();
        let unresolved: Vec<u64> = store
            .unresolved_escalations()
            .unwrap()
            .iter()
            .map(|e| e.view.id)
            .collect();
        assert_eq!(unresolved, vec![2], "the resolved one left the state index");
        assert_eq!(store.escalation_ids_about(&a).unwrap(), vec![1]);
        assert_eq!(store.escalation_ids_handled_by(&a).unwrap(), vec![2]);
        assert_eq!(
            store
                .escalation_ids_flagged_by(&PublicKey([9; 32]))
                .unwrap(),
            vec![1, 2]
        );
    }

    /// A cluster node that took the router over holds escalations another node
    /// numbered; once retention deleted them, its next id must still be above
    /// them: a reused id would find the old one's routing steps marked done, so
    /// the new escalation would page and push nobody. Fails on the old code,
    /// which gave id 1 again.
    #[test]
    fn an_escalation_id_is_never_used_again_after_retention_deleted_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let about = PublicKey([1; 32]);
        // Numbered elsewhere (applied from the router's log), then resolved.
        for id in [5, 6] {
            store
                .put_escalation(&escalation(id, about, EscalationStatus::Resolved))
                .unwrap();
        }
        store.put_step_done(6, 2).unwrap();
        let mut expired = retention::Expired::default();
        store
            .find_expired_escalations(&mut expired, |_| true)
            .unwrap();
        assert_eq!(store.delete_expired(expired).unwrap().escalations, 2);
        assert!(store.escalation(6).unwrap().is_none());
        assert_eq!(store.escalation_id_high().unwrap(), 6);
        let next = store.next_escalation_id().unwrap();
        assert!(next > 6, "id {next} is not above the deleted 6");
        assert_eq!(store.step_done(next).unwrap(), 0, "no step of it is done");
        // Kept across a reopen, and never lowered by an older id written late.
        store
            .put_escalation(&escalation(3, about, EscalationStatus::Open))
            .unwrap();
        drop(store);
        let store = open_again(dir.path());
        assert_eq!(store.escalation_id_high().unwrap(), 6);
        assert!(store.next_escalation_id().unwrap() > 6);
    }

    /// Opens a store just dropped: sled's background thread may hold the folder's
    /// lock for a moment after the drop.
    fn open_again(dir: &std::path::Path) -> Store {
        for _ in 0..100 {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(error) if error.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(error) => panic!("{error}"),
            }
        }
        Store::open(dir).unwrap()
    }

    #[test]
    fn a_store_from_before_the_index_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put_escalation(&escalation(7, PublicKey([1; 32]), EscalationStatus::Open))
                .unwrap();
            store.t().escindex_escid.clear().unwrap();
            store.t().meta.remove("escindex_built").unwrap();
            store.flush().unwrap();
            assert!(store.unresolved_escalations().unwrap().is_empty());
        }
        let store = open_again(dir.path());
        let unresolved = store.unresolved_escalations().unwrap();
        assert_eq!(unresolved.len(), 1);
        assert_eq!(unresolved[0].view.id, 7);
    }

    #[test]
    fn an_index_build_a_crash_cut_short_is_built_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        {
            let store = Store::open(dir.path()).unwrap();
            for (id, about) in [(1, a), (2, b), (3, a)] {
                store
                    .put_escalation(&escalation(id, about, EscalationStatus::Open))
                    .unwrap();
            }
            // What a build stopped half-way leaves: some entries, no marker.
            let keys: Vec<_> = store
                .t()
                .escindex_escid
                .iter()
                .keys()
                .map(Result::unwrap)
                .collect();
            for key in &keys[keys.len() / 2..] {
                store.t().escindex_escid.remove(key).unwrap();
            }
            store.t().meta.remove("escindex_built").unwrap();
            store.flush().unwrap();
            assert!(store.unresolved_escalations().unwrap().len() < 3);
        }
        let store = open_again(dir.path());
        assert_eq!(store.unresolved_escalations().unwrap().len(), 3);
        assert_eq!(store.escalation_ids_about(&a).unwrap(), vec![1, 3]);
        assert_eq!(store.escalation_ids_about(&b).unwrap(), vec![2]);
    }

    #[test]
    fn counters_only_rise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = PublicKey([1; 32]);
        store.raise_counter(&key, 10).unwrap();
        store.raise_counter(&key, 5).unwrap();
        assert_eq!(store.counter(&key).unwrap(), 10);
    }

    #[test]
    fn an_invite_is_redeemed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let invite = InviteRecord {
            role: Role::Facilitator.into(),
            group: None,
            groups: Vec::new(),
            created_ms: 0,
            expires_ms: 100,
            created_by: None,
            bootstrap: false,
            used_by: None,
            used_ms: None,
        };
        store.put_invite([9; 32], &invite).unwrap();
        let a = PublicKey([1; 32]);
        assert!(store.redeem_invite([9; 32], &a, 200).unwrap() == Err(RedeemRefusal::Expired));
        assert!(store.redeem_invite([9; 32], &a, 50).unwrap().is_ok());
        assert!(
            store.redeem_invite([9; 32], &a, 60).unwrap().is_ok(),
            "same key: same answer"
        );
        let b = PublicKey([2; 32]);
        assert!(store.redeem_invite([9; 32], &b, 50).unwrap() == Err(RedeemRefusal::Used));
        assert!(store.redeem_invite([8; 32], &a, 50).unwrap() == Err(RedeemRefusal::Unknown));
    }
}
