//! The audit chain's tree (`seq_audit`). Written by the audit helper.
