//! The cluster backup file (`peerhub-cluster-backup/1`, docs/FORMATS.md §2):
//! written line by line as [`super::backup`] copies each stream, and checked
//! whole before [`super::restore`] creates anything.
//!
//! JSON lines, each ending with `0x0A`, each an object whose `line` names it:
//!
//! ```text
//! {"line":"header","format":"peerhub-cluster-backup/1","created_ms":1764000000000}
//! {"line":"part","stream":"KV_peerhub_group_state","config":{..},"state":{..}}
//! {"line":"chunk","data":"<base64url of the snapshot's next bytes>"}
//! {"line":"part_end","stream":"KV_peerhub_group_state","last_seq":42,"messages":7,"bytes":1234,"chunks":1,"sha256":"<hex>"}
//! ...one part per stream, in the order of [`super::backup::ORDER`]...
//! {"line":"end","parts":7,"digest":"<hex>"}
//! ```
//!
//! A part's `sha256` is over its snapshot bytes (the chunks decoded, in order);
//! the end's `digest` is over every byte of the file before the end line. A
//! restore checks the whole file — every line, every part's digest and length,
//! the end's digest, nothing after it — before it creates anything.

use std::io::{BufRead, Write};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::backup::{BackupError, BackupSummary, PartSummary};
use super::stores::ClusterStore;

/// The format name in the header.
pub const FORMAT: &str = "peerhub-cluster-backup/1";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Line {
    Header {
        format: String,
        created_ms: u64,
    },
    Part {
        stream: String,
        config: Value,
        state: Value,
    },
    Chunk {
        data: String,
    },
    PartEnd {
        stream: String,
        last_seq: u64,
        messages: u64,
        bytes: u64,
        chunks: u64,
        sha256: String,
    },
    End {
        parts: u64,
        digest: String,
    },
}

/// Writes to the file and hashes every byte written.
pub(super) struct Hashed<W: Write> {
    pub(super) out: W,
    pub(super) hash: Sha256,
}

impl<W: Write> Hashed<W> {
    pub(super) fn line(&mut self, line: &Line) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        self.hash.update(&bytes);
        self.out.write_all(&bytes)
    }
}

/// Where a [`Hashed`] file stood: its length and its hash so far.
pub(super) struct Mark {
    length: u64,
    hash: Sha256,
}

impl Hashed<std::io::BufWriter<std::fs::File>> {
    pub(super) fn position(&mut self) -> std::io::Result<Mark> {
        use std::io::Seek as _;
        self.out.flush()?;
        Ok(Mark {
            length: self.out.get_mut().stream_position()?,
            hash: self.hash.clone(),
        })
    }

    /// Cuts the file back to `mark`, as if nothing had been written since.
    pub(super) fn rewind(&mut self, mark: &Mark) -> std::io::Result<()> {
        use std::io::Seek as _;
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(mark.length)?;
        file.seek(std::io::SeekFrom::Start(mark.length))?;
        self.hash = mark.hash.clone();
        Ok(())
    }
}

pub(super) fn file_error(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |error| BackupError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

pub(super) fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// One part of a checked file: what [`super::restore`] sends.
pub(super) struct CheckedPart {
    pub(super) summary: PartSummary,
    pub(super) config: Value,
    pub(super) state: Value,
}

/// Reads the lines of a backup file, keeping each line's bytes for the digest.
pub(super) struct Lines<R: BufRead> {
    input: R,
    number: usize,
    hash: Sha256,
}

impl<R: BufRead> Lines<R> {
    /// The next line, parsed; `None` at the end of the file. A last line without
    /// its `0x0A` is a cut-short file.
    pub(super) fn next(&mut self) -> Result<Option<Line>, BackupError> {
        let mut bytes = Vec::new();
        let read = self
            .input
            .read_until(b'\n', &mut bytes)
            .map_err(|error| BackupError::Bad(format!("reading: {error}")))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if bytes.last() != Some(&b'\n') {
            return Err(BackupError::Bad(format!(
                "line {} is cut short",
                self.number
            )));
        }
        let line: Line = serde_json::from_slice(&bytes)
            .map_err(|error| BackupError::Bad(format!("line {}: {error}", self.number)))?;
        if !matches!(line, Line::End { .. }) {
            self.hash.update(&bytes);
        }
        Ok(Some(line))
    }

    pub(super) fn expect(&mut self) -> Result<Line, BackupError> {
        self.next()?.ok_or_else(|| {
            BackupError::Bad("the file ends before its end line: it is cut short".into())
        })
    }

    pub(super) fn bad(&self, why: impl std::fmt::Display) -> BackupError {
        BackupError::Bad(format!("line {}: {why}", self.number))
    }
}

pub(super) fn open_lines(
    path: &Path,
) -> Result<Lines<std::io::BufReader<std::fs::File>>, BackupError> {
    let file = std::fs::File::open(path).map_err(file_error(path))?;
    Ok(Lines {
        input: std::io::BufReader::new(file),
        number: 0,
        hash: Sha256::new(),
    })
}

/// Checks a whole backup file without touching NATS: its header, every part
/// (a stream of the list, once, its chunks' length and SHA-256), the end line's
/// digest over everything before it, and nothing after it.
pub fn check_file(path: &Path) -> Result<BackupSummary, BackupError> {
    check_parts(path).map(|(summary, _)| summary)
}

pub(super) fn check_parts(path: &Path) -> Result<(BackupSummary, Vec<CheckedPart>), BackupError> {
    let mut lines = open_lines(path)?;
    let created_ms = match lines.next()? {
        Some(Line::Header { format, created_ms }) if format == FORMAT => created_ms,
        Some(Line::Header { format, .. }) => {
            return Err(BackupError::Bad(format!(
                "format {format:?}, expected {FORMAT:?}"
            )))
        }
        Some(_) => return Err(lines.bad("not a backup header")),
        None => return Err(BackupError::Bad("the file is empty".into())),
    };
    let known: Vec<String> = ClusterStore::ALL.iter().map(|s| s.stream()).collect();
    let mut parts: Vec<CheckedPart> = Vec::new();
    let end = loop {
        let (stream, config, state) = match lines.expect()? {
            Line::End { parts, digest } => break (parts, digest),
            Line::Part {
                stream,
                config,
                state,
            } => (stream, config, state),
            _ => return Err(lines.bad("expected a part or the end")),
        };
        if !known.contains(&stream) {
            return Err(lines.bad(format!("{stream:?} is not one of peerhub's streams")));
        }
        if parts.iter().any(|p| p.summary.stream == stream) {
            return Err(lines.bad(format!("{stream} comes twice")));
        }
        if config.get("name").and_then(Value::as_str) != Some(stream.as_str()) {
            return Err(lines.bad(format!("the configuration is not {stream}'s")));
        }
        let mut hash = Sha256::new();
        let (mut bytes, mut chunks) = (0u64, 0u64);
        let summary = loop {
            match lines.expect()? {
                Line::Chunk { data } => {
                    let chunk = URL_SAFE_NO_PAD
                        .decode(&data)
                        .map_err(|error| lines.bad(format!("chunk: {error}")))?;
                    hash.update(&chunk);
                    bytes += chunk.len() as u64;
                    chunks += 1;
                }
                Line::PartEnd {
                    stream: ended,
                    last_seq,
                    messages,
                    bytes: recorded_bytes,
                    chunks: recorded_chunks,
                    sha256,
                } => {
                    let sum = hex::encode(hash.finalize());
                    if ended != stream {
                        return Err(lines.bad(format!("{stream}'s part ends as {ended}'s")));
                    }
                    if recorded_bytes != bytes || recorded_chunks != chunks {
                        return Err(lines.bad(format!(
                            "{stream}: {chunks} chunks of {bytes} bytes read, the part \
                             says {recorded_chunks} of {recorded_bytes}"
                        )));
                    }
                    if sum != sha256 {
                        return Err(lines.bad(format!(
                            "{stream}: the snapshot's SHA-256 is {sum}, the part says {sha256}"
                        )));
                    }
                    if last_seq != number(&state, "last_seq")
                        || messages != number(&state, "messages")
                    {
                        return Err(lines.bad(format!(
                            "{stream}: the part's sequence or count disagrees with its state"
                        )));
                    }
                    break PartSummary {
                        stream,
                        last_seq,
                        messages,
                        bytes,
                        sha256,
                        copies: 1,
                    };
                }
                _ => return Err(lines.bad(format!("expected a chunk of {stream} or its end"))),
            }
        };
        parts.push(CheckedPart {
            summary,
            config,
            state,
        });
    };
    let (count, digest) = end;
    let sum = hex::encode(lines.hash.clone().finalize());
    if sum != digest {
        return Err(BackupError::Bad(format!(
            "the file's digest is {sum}, its end line says {digest}"
        )));
    }
    if count != parts.len() as u64 {
        return Err(BackupError::Bad(format!(
            "{} parts read, the end line says {count}",
            parts.len()
        )));
    }
    if lines.next()?.is_some() {
        return Err(lines.bad("follows the end line"));
    }
    let directory = ClusterStore::Directory.stream();
    if !parts.iter().any(|p| p.summary.stream == directory) {
        return Err(BackupError::Bad(format!("it holds no {directory}")));
    }
    let summary = BackupSummary {
        file: path.to_path_buf(),
        format: FORMAT,
        created_ms,
        digest,
        streams: parts.iter().map(|p| p.summary.clone()).collect(),
        absent: known
            .into_iter()
            .filter(|s| !parts.iter().any(|p| &p.summary.stream == s))
            .collect(),
    };
    Ok((summary, parts))
}
