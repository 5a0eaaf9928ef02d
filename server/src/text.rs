//! The one rule for free-text fields (bodies, titles, agreements, reasons, notes,
//! outcomes): not blank, and at most a limit in Unicode scalar values.

use peerhub_protocol::ProtocolError;

use crate::error::ServerError;

/// Refuses blank text (`invalid`) and text over `limit` characters
/// (`body_too_long`); returns it trimmed.
pub fn check_text<'t>(
    field: &'static str,
    text: &'t str,
    limit: usize,
) -> Result<&'t str, ServerError> {
    let len = text.chars().count();
    if len > limit {
        return Err(ProtocolError::TooLong { field, len, limit }.into());
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ProtocolError::invalid(field, "cannot be empty").into());
    }
    Ok(trimmed)
}
