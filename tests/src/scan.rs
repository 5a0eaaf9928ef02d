//! Byte scans of a data folder: does any file still hold a given text?
//!
//! Every regular file under the folder is read whole (sled's log and snapshots,
//! the control socket is skipped), and the text is looked for as UTF-8, as JSON
//! with every non-ASCII character escaped (`\u00e9`, either case of hex), and as
//! UTF-16LE and UTF-16BE.

use std::path::{Path, PathBuf};

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("dir entry").path());
            }
        } else if meta.is_file() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The forms of `text` looked for: UTF-8, JSON-escaped (`\uXXXX` for every
/// non-ASCII UTF-16 unit, lower and upper case hex), UTF-16LE, UTF-16BE.
pub fn encodings(text: &str) -> Vec<Vec<u8>> {
    let le = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let escaped = |upper: bool| -> Vec<u8> {
        let mut out = String::new();
        for unit in text.encode_utf16() {
            match u8::try_from(unit) {
                Ok(b) if b.is_ascii() => out.push(char::from(b)),
                _ if upper => out.push_str(&format!("\\u{unit:04X}")),
                _ => out.push_str(&format!("\\u{unit:04x}")),
            }
        }
        out.into_bytes()
    };
    let mut forms = vec![
        text.as_bytes().to_vec(),
        escaped(false),
        escaped(true),
        le,
        be,
    ];
    forms.dedup();
    forms
}

/// The files under `dir` holding `text` in any of its [`encodings`], with how
/// many times.
pub fn files_holding(dir: &Path, text: &str) -> Vec<(PathBuf, usize)> {
    let forms = encodings(text);
    let mut out = Vec::new();
    for path in files_under(dir) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let count: usize = forms
            .iter()
            .map(|form| bytes.windows(form.len()).filter(|w| w == form).count())
            .sum();
        if count > 0 {
            out.push((path, count));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_forms_of_a_text() {
        let forms = super::encodings("Zoë");
        assert!(forms.contains(&b"Zo\\u00eb".to_vec()));
        assert!(forms.contains(&b"Zo\\u00EB".to_vec()));
        assert!(forms.contains(&"Zoë".as_bytes().to_vec()));
        assert!(forms.contains(&vec![b'Z', 0, b'o', 0, 0xeb, 0]));
    }
}
