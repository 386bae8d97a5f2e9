//! Reading a fleet repo directory: every `*.yaml` / `*.yml` file in any layout, hidden
//! entries ignored, symlinks that leave the repo refused, file size and YAML expansion
//! bounded. The result is a list of positioned YAML documents plus diagnostics; nothing
//! here knows the fleet kinds.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::diagnostic::{Code, Diagnostic};
use super::yaml::{self, Limits, Node, Pos, YamlErrorKind};

/// Limits for loading a fleet repo.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// YAML parser limits.
    pub yaml: Limits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 * 1024 * 1024,
            yaml: Limits::default(),
        }
    }
}

/// One YAML document and where it came from.
#[derive(Debug, Clone)]
pub struct SourceDoc {
    /// File, relative to the fleet root.
    pub file: PathBuf,
    /// The document's tree, with positions.
    pub node: Node,
}

/// What loading found: documents, and problems with files.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every document of every file, in path order.
    pub docs: Vec<SourceDoc>,
    /// Problems found while reading and parsing.
    pub diagnostics: Vec<Diagnostic>,
    /// How many YAML files were read.
    pub files: usize,
}

/// Errors that stop loading altogether (as opposed to per-file diagnostics).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The root itself cannot be read.
    #[error("cannot read fleet directory {path}: {source}")]
    Root {
        /// The root given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
}

/// Loads every YAML document under `root`.
pub fn load_dir(root: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let canonical = root.canonicalize().map_err(|source| LoadError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if !canonical.is_dir() {
        return Err(LoadError::NotADirectory(root.to_path_buf()));
    }
    let mut walk = Walk {
        root: canonical.clone(),
        files: Vec::new(),
        diagnostics: Vec::new(),
        visited: HashSet::from([canonical.clone()]),
    };
    walk.dir(&canonical, Path::new(""));
    let mut loaded = Loaded {
        diagnostics: walk.diagnostics,
        files: walk.files.len(),
        ..Loaded::default()
    };
    let per_file: Vec<Loaded> = walk
        .files
        .par_iter()
        .map(|(absolute, relative)| {
            let mut one = Loaded::default();
            load_file(absolute, relative, options, &mut one);
            one
        })
        .collect();
    for one in per_file {
        loaded.docs.extend(one.docs);
        loaded.diagnostics.extend(one.diagnostics);
    }
    Ok(loaded)
}

/// Parses YAML text as if it were the file `relative` (used by tests and `--stdin` tools).
pub fn load_text(text: &str, relative: &Path, options: &LoadOptions, into: &mut Loaded) {
    match yaml::parse_documents(text, options.yaml) {
        Ok(nodes) => into.docs.extend(nodes.into_iter().map(|node| SourceDoc {
            file: relative.to_path_buf(),
            node,
        })),
        Err(err) => {
            let code = match err.kind {
                YamlErrorKind::Syntax => Code::YamlSyntax,
                YamlErrorKind::DuplicateKey => Code::DuplicateKey,
                YamlErrorKind::Budget => Code::YamlBudget,
            };
            let mut d = Diagnostic::new(code, relative, err.pos, err.message);
            d.hint = match err.kind {
                YamlErrorKind::Syntax => None,
                YamlErrorKind::DuplicateKey => Some("remove one of the two entries".into()),
                YamlErrorKind::Budget => {
                    Some("fleet files must not expand aliases without bound or nest deeply".into())
                }
            };
            into.diagnostics.push(d);
        }
    }
}

fn load_file(absolute: &Path, relative: &Path, options: &LoadOptions, loaded: &mut Loaded) {
    match read_bounded(absolute, options.max_file_bytes) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_text(&text, relative, options, loaded),
            Err(err) => {
                loaded
                    .diagnostics
                    .push(not_utf8(relative, err.as_bytes(), err.utf8_error()))
            }
        },
        Err(ReadError::TooLarge(size)) => loaded.diagnostics.push(
            Diagnostic::new(
                Code::FileTooLarge,
                relative,
                Pos::default(),
                format!(
                    "file is {size} bytes, more than the limit of {}",
                    options.max_file_bytes
                ),
            )
            .with_hint("split the file, or raise the limit with --max-file-size"),
        ),
        Err(ReadError::NotRegular(kind)) => loaded.diagnostics.push(
            Diagnostic::new(
                Code::NotRegularFile,
                relative,
                Pos::default(),
                format!("not a regular file but {kind}; it was not opened for reading"),
            )
            .with_hint("remove it, or rename it so that it does not end in .yaml or .yml"),
        ),
        Err(ReadError::Io(err)) => loaded.diagnostics.push(Diagnostic::new(
            Code::Io,
            relative,
            Pos::default(),
            format!("cannot read file: {err}"),
        )),
    }
}

fn not_utf8(relative: &Path, bytes: &[u8], err: std::str::Utf8Error) -> Diagnostic {
    let valid = &bytes[..err.valid_up_to()];
    let line = valid.iter().filter(|b| **b == b'\n').count() as u32 + 1;
    let column =
        (valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)) as u32 + 1;
    Diagnostic::new(
        Code::NotUtf8,
        relative,
        Pos { line, column },
        format!(
            "file is not valid UTF-8 (invalid byte 0x{:02x})",
            bytes[err.valid_up_to()]
        ),
    )
    .with_hint("fleet files must be UTF-8 text")
}

enum ReadError {
    TooLarge(u64),
    /// Not a regular file: what it is instead ("a FIFO", "a socket", ...).
    NotRegular(&'static str),
    Io(std::io::Error),
}

/// What a non-regular file is, for messages.
fn kind_of(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Reads at most `limit` bytes of a regular file; a larger file is refused without reading
/// it all. The file is opened non-blocking and its type checked on the open handle, so a
/// FIFO, device or socket (even one swapped in after the directory walk) is refused and
/// never blocks the read.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let before = fs::metadata(path).map_err(ReadError::Io)?;
    if !before.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(before.file_type())));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    let size = meta.len();
    if size > limit {
        return Err(ReadError::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

struct Walk {
    root: PathBuf,
    files: Vec<(PathBuf, PathBuf)>,
    diagnostics: Vec<Diagnostic>,
    visited: HashSet<PathBuf>,
}

impl Walk {
    fn dir(&mut self, absolute: &Path, relative: &Path) {
        let entries = match fs::read_dir(absolute) {
            Ok(entries) => entries,
            Err(err) => return self.io_error(relative, &err),
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            self.entry(&entry.path(), &relative.join(&name));
        }
    }

    fn entry(&mut self, path: &Path, relative: &Path) {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) => return self.io_error(relative, &err),
        };
        let target = if meta.file_type().is_symlink() {
            match self.resolve_link(path, relative) {
                Some(target) => target,
                None => return,
            }
        } else {
            path.to_path_buf()
        };
        if target.is_dir() {
            if self
                .visited
                .insert(target.canonicalize().unwrap_or_else(|_| target.clone()))
            {
                self.dir(&target, relative);
            }
        } else if is_yaml(relative) {
            self.files.push((target, relative.to_path_buf()));
        }
    }

    /// The canonical target of a symlink inside the repo, or a diagnostic.
    fn resolve_link(&mut self, path: &Path, relative: &Path) -> Option<PathBuf> {
        match path.canonicalize() {
            Ok(target) if target.starts_with(&self.root) => Some(target),
            Ok(target) => {
                if is_yaml(relative) || target.is_dir() {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::SymlinkEscape,
                            relative,
                            Pos::default(),
                            format!(
                                "symlink points outside the fleet repo, to {}",
                                target.display()
                            ),
                        )
                        .with_hint("the fleet repo must be self-contained; copy the file in"),
                    );
                }
                None
            }
            Err(err) => {
                if is_yaml(relative) {
                    self.io_error(relative, &err);
                }
                None
            }
        }
    }

    fn io_error(&mut self, relative: &Path, err: &std::io::Error) {
        self.diagnostics.push(Diagnostic::new(
            Code::Io,
            relative,
            Pos::default(),
            format!("cannot read: {err}"),
        ));
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}
