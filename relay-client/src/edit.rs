//! `relay replay`'s edit flags (`--header`, `--remove-header`, `--method`,
//! `--path`, `--body`) and `--edit`: the captured request as HTTP/1.1 text
//! in `$VISUAL` / `$EDITOR`, parsed back. Everything here happens before a
//! byte is sent: any error means nothing is sent. Sending (and framing:
//! `Content-Length` follows the body) is `replay.rs`'s.

use std::path::{Path, PathBuf};

use anyhow::Context;
use http::{HeaderName, HeaderValue, Method};
use relay_shared::api::{Record, ReplayEdits};

/// Where `--body` takes the new body from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySource {
    /// `@FILE`: the file's bytes, binary or not.
    File(PathBuf),
    /// `-`: standard input, to its end.
    Stdin,
    /// Anything else: the text itself.
    Text(String),
}

impl BodySource {
    /// `--body`'s value, the way curl reads `--data-binary`.
    pub fn parse(arg: &str) -> Self {
        match arg {
            "-" => Self::Stdin,
            _ => match arg.strip_prefix('@') {
                Some(path) => Self::File(PathBuf::from(path)),
                None => Self::Text(arg.to_owned()),
            },
        }
    }

    /// The body's bytes, exactly.
    pub fn read(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::File(path) => std::fs::read(path)
                .with_context(|| format!("--body: cannot read {}", path.display())),
            Self::Stdin => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                    .context("--body -: cannot read standard input")?;
                Ok(bytes)
            }
            Self::Text(text) => Ok(text.clone().into_bytes()),
        }
    }
}

/// `--header 'Name: value'`, checked when the command line is parsed.
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("{arg:?} is not `Name: value`"))?;
    let (name, value) = (name.trim(), value.trim());
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    HeaderValue::from_str(value).map_err(|_| format!("the value of {name:?} is not valid"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The edit flags, as given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--header`: replaces every value of that name, or adds it.
    pub set: Vec<(String, String)>,
    /// `--remove-header`: removes every value of that name.
    pub remove: Vec<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The `--body` bytes, already read.
    pub body: Option<Vec<u8>>,
}

/// Applies `--remove-header` then `--header` to `headers`, names compared
/// case-insensitively. A replaced header keeps its place (the first
/// occurrence), so the edited request reads like the captured one.
pub fn apply_headers(
    headers: &[(String, String)],
    set: &[(String, String)],
    remove: &[String],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| {
            !remove
                .iter()
                .any(|r| r.trim().eq_ignore_ascii_case(n.trim()))
        })
        .cloned()
        .collect();
    for (name, value) in set {
        let same = |n: &str| n.trim().eq_ignore_ascii_case(name);
        match out.iter().position(|(n, _)| same(n)) {
            Some(first) => {
                out[first] = (name.clone(), value.clone());
                let mut i = 0;
                out.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || !same(n)
                });
            }
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

impl Flags {
    /// Whether any flag changes the request.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.remove.is_empty()
            && self.method.is_none()
            && self.path.is_none()
            && self.body.is_none()
    }

    /// The edits for `record`; `force` as given.
    pub fn edits(&self, record: &Record, force: bool) -> ReplayEdits {
        let headers = (!self.set.is_empty() || !self.remove.is_empty())
            .then(|| apply_headers(&record.request.headers, &self.set, &self.remove));
        ReplayEdits {
            method: self.method.clone(),
            path: self.path.clone(),
            headers,
            body: self.body.clone(),
            force,
            ..ReplayEdits::default()
        }
    }
}

/// A request as the editor shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Draft {
    /// `record`'s request with `edits` applied.
    pub fn new(record: &Record, edits: &ReplayEdits) -> Self {
        Self {
            method: edits
                .method
                .clone()
                .unwrap_or_else(|| record.summary.method.clone()),
            path: edits
                .path
                .clone()
                .unwrap_or_else(|| record.summary.path.clone()),
            headers: edits
                .headers
                .clone()
                .unwrap_or_else(|| record.request.headers.clone()),
            body: edits
                .body
                .clone()
                .unwrap_or_else(|| record.request.body.clone()),
        }
    }

    /// HTTP/1.1 text: request line, headers, blank line, body. A
    /// `Content-Length` shows the body's length (the replay sets it so
    /// whatever the text says).
    pub fn render(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        for (name, value) in &self.headers {
            let value = if name.eq_ignore_ascii_case("content-length") {
                self.body.len().to_string()
            } else {
                value.clone()
            };
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The edits that send this draft as it is.
    pub fn into_edits(self, force: bool) -> ReplayEdits {
        ReplayEdits {
            method: Some(self.method),
            path: Some(self.path),
            headers: Some(self.headers),
            body: Some(self.body),
            force,
            ..ReplayEdits::default()
        }
    }
}

/// Why edited text is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotARequest {
    #[error("the text is empty")]
    Empty,
    #[error("line 1, {0:?}, is not a request line (`METHOD /path HTTP/1.1`)")]
    RequestLine(String),
    #[error("line {0}, {1:?}, has no colon (a header line is `Name: value`)")]
    NoColon(usize, String),
    #[error("line {0}: {1:?} is not a valid header name")]
    HeaderName(usize, String),
    #[error("line {0}: the value of {1:?} is not valid")]
    HeaderValue(usize, String),
    #[error("line {0} continues the previous header (obsolete line folding); put it on one line")]
    Folded(usize),
    #[error("the request line and headers are not UTF-8")]
    NotUtf8,
}

/// Parses edited text back. Lines may end in CRLF or LF (editors differ);
/// the body is every byte after the first blank line. `added_newline`:
/// the rendered body did not end in a newline, so one the editor added at
/// the end of the file (vi and most editors do) is not the user's and is
/// dropped.
pub fn parse(text: &[u8], added_newline: bool) -> Result<Draft, NotARequest> {
    // Blank lines before the request line are tolerated, as in RFC 9112.
    let start = text
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(NotARequest::Empty)?;
    let text = &text[start..];
    let (head, body) = split_head(text);
    let head = std::str::from_utf8(head).map_err(|_| NotARequest::NotUtf8)?;
    let mut lines = head.lines();
    let request_line = lines.next().ok_or(NotARequest::Empty)?;
    let (method, path) = parse_request_line(request_line)
        .ok_or_else(|| NotARequest::RequestLine(request_line.to_owned()))?;
    let mut headers = Vec::new();
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        if line.starts_with([' ', '\t']) {
            return Err(NotARequest::Folded(number));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| NotARequest::NoColon(number, line.to_owned()))?;
        // No whitespace before the colon (RFC 9112 5.1): HeaderName refuses it.
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| NotARequest::HeaderName(number, name.to_owned()))?;
        let value = value.trim_matches([' ', '\t']);
        HeaderValue::from_str(value)
            .map_err(|_| NotARequest::HeaderValue(number, name.to_owned()))?;
        headers.push((name.to_owned(), value.to_owned()));
    }
    let mut body = body.to_vec();
    if added_newline {
        if body.ends_with(b"\r\n") {
            body.truncate(body.len() - 2);
        } else if body.ends_with(b"\n") {
            body.truncate(body.len() - 1);
        }
    }
    Ok(Draft {
        method,
        path,
        headers,
        body,
    })
}

/// Head and body: split at the first empty line (CRLF or LF); no empty
/// line means no body.
fn split_head(text: &[u8]) -> (&[u8], &[u8]) {
    let mut line_start = 0;
    while let Some(nl) = text[line_start..].iter().position(|&b| b == b'\n') {
        let end = line_start + nl;
        let line = &text[line_start..end];
        if line.is_empty() || line == b"\r" {
            return (&text[..line_start], &text[end + 1..]);
        }
        line_start = end + 1;
    }
    (text, &[])
}

fn parse_request_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split_ascii_whitespace();
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return None;
    }
    Method::from_bytes(method.as_bytes()).ok()?;
    Some((method.to_owned(), path.to_owned()))
}

/// The editor to run, from `$VISUAL` then `$EDITOR` (empty counts as
/// unset), split on whitespace as git does for `EDITOR="code --wait"`.
pub fn editor_command(visual: Option<&str>, editor: Option<&str>) -> Option<Vec<String>> {
    [visual, editor]
        .into_iter()
        .flatten()
        .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|words| !words.is_empty())
}

/// Why `--edit` sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum EditFailed {
    #[error("--edit needs an editor: set $VISUAL or $EDITOR (e.g. EDITOR=vi); nothing was sent")]
    NoEditor,
    #[error("the editor `{0}` did not start: {1}; nothing was sent")]
    Spawn(String, std::io::Error),
    #[error("the editor `{0}` exited with {1}; nothing was sent")]
    Exit(String, std::process::ExitStatus),
    #[error("the edited request is not valid: {0}; nothing was sent (your text is kept in {1})")]
    Invalid(NotARequest, PathBuf),
}

/// Runs `editor` on `draft` rendered into a temporary file and parses the
/// result. The file is removed unless the text is invalid: then it is
/// kept, so an edit is not lost to a typo.
pub fn edit(draft: &Draft, editor: &[String]) -> anyhow::Result<Draft> {
    let (program, args) = editor.split_first().ok_or(EditFailed::NoEditor)?;
    let mut file = tempfile::Builder::new()
        .prefix("relay-replay-")
        .suffix(".http")
        .tempfile()
        .context("creating a file for the editor")?;
    std::io::Write::write_all(&mut file, &draft.render()).context("writing the request")?;
    let path = file.path().to_owned();
    let status = std::process::Command::new(program)
        .args(args)
        .arg(&path)
        .status()
        .map_err(|e| EditFailed::Spawn(editor.join(" "), e))?;
    if !status.success() {
        return Err(EditFailed::Exit(editor.join(" "), status).into());
    }
    let text = read_back(&path)?;
    let added_newline = !draft.body.ends_with(b"\n");
    parse(&text, added_newline).map_err(|e| {
        let kept = file.keep().map(|(_, p)| p).unwrap_or_else(|_| path.clone());
        EditFailed::Invalid(e, kept).into()
    })
}

/// The file as the editor left it; editors that save by renaming a new
/// file over it are fine, since the path is read again.
fn read_back(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {} after the editor", path.display()))
}

#[cfg(test)]
mod tests;
