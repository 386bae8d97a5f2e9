//! Reading a commit's tree from the object database into a flat list of entries, and
//! the checks that make it safe to write: names, size and entry limits, no submodules,
//! and no symlink that resolves outside the tree.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Odb, Oid, Repository, Tree};

use super::error::Refusal;

/// Most symlinks followed while resolving one path (the Linux limit).
const MAX_SYMLINK_HOPS: usize = 40;
/// Longest symlink target read.
const MAX_SYMLINK_TARGET: usize = 4096;

/// What a tree entry is.
#[derive(Debug)]
pub(crate) enum Kind {
    Dir,
    File { oid: Oid, executable: bool },
    Symlink { target: PathBuf },
}

/// One entry, by its path relative to the tree root.
#[derive(Debug)]
pub(crate) struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
}

/// Bounds on what is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: usize,
    pub max_depth: usize,
}

/// Why a tree cannot be read.
#[derive(Debug)]
pub(crate) enum TreeError {
    /// Content drover refuses, at a path.
    Refused(String, Refusal),
    /// The object database failed.
    Git(git2::Error),
}

impl From<git2::Error> for TreeError {
    fn from(err: git2::Error) -> Self {
        Self::Git(err)
    }
}

/// The tree's entries in walk order (parents before children), with totals.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub entries: Vec<Entry>,
    pub bytes: u64,
}

/// Lists `tree` recursively, enforcing `limits` and refusing gitlinks and bad names, then
/// checks every symlink.
pub(crate) fn list(
    repo: &Repository,
    tree: &Tree<'_>,
    limits: Limits,
) -> Result<Listing, TreeError> {
    let odb = repo.odb()?;
    let mut listing = Listing::default();
    walk(repo, &odb, tree, Path::new(""), 1, limits, &mut listing)?;
    check_symlinks(&listing.entries)?;
    Ok(listing)
}

fn walk(
    repo: &Repository,
    odb: &Odb<'_>,
    tree: &Tree<'_>,
    prefix: &Path,
    depth: usize,
    limits: Limits,
    out: &mut Listing,
) -> Result<(), TreeError> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let path = prefix.join(OsStr::from_bytes(name));
        if !valid_name(name) {
            return Err(refused(&path, Refusal::BadName));
        }
        if out.entries.len() >= limits.max_entries {
            return Err(TreeError::Refused(
                ".".into(),
                Refusal::TooManyEntries {
                    limit: limits.max_entries,
                },
            ));
        }
        let id = entry.id();
        match entry.filemode() {
            0o040000 => {
                if depth >= limits.max_depth {
                    return Err(refused(
                        &path,
                        Refusal::TooDeep {
                            limit: limits.max_depth,
                        },
                    ));
                }
                out.entries.push(Entry {
                    path: path.clone(),
                    kind: Kind::Dir,
                });
                let subtree = repo.find_tree(id)?;
                walk(repo, odb, &subtree, &path, depth + 1, limits, out)?;
            }
            mode @ (0o100644 | 0o100755 | 0o100664) => {
                let size = blob_size(odb, id)?;
                add_bytes(out, size, limits)?;
                out.entries.push(Entry {
                    path,
                    kind: Kind::File {
                        oid: id,
                        executable: mode == 0o100755,
                    },
                });
            }
            0o120000 => {
                let size = blob_size(odb, id)?;
                add_bytes(out, size, limits)?;
                let object = odb.read(id)?;
                let data = object.data();
                if data.len() > MAX_SYMLINK_TARGET || data.contains(&0) || data.is_empty() {
                    return Err(refused(&path, Refusal::BadName));
                }
                out.entries.push(Entry {
                    path,
                    kind: Kind::Symlink {
                        target: PathBuf::from(OsStr::from_bytes(data)),
                    },
                });
            }
            0o160000 => return Err(refused(&path, Refusal::Submodule)),
            other => {
                return Err(TreeError::Git(git2::Error::from_str(&format!(
                    "tree entry `{}` has unknown mode {other:o}",
                    path.display()
                ))));
            }
        }
    }
    Ok(())
}

fn refused(path: &Path, refusal: Refusal) -> TreeError {
    TreeError::Refused(path.display().to_string(), refusal)
}

fn blob_size(odb: &Odb<'_>, id: Oid) -> Result<u64, TreeError> {
    let (size, kind) = odb.read_header(id)?;
    if kind != ObjectType::Blob {
        return Err(TreeError::Git(git2::Error::from_str(&format!(
            "object {id} should be a blob but is a {kind}"
        ))));
    }
    Ok(size as u64)
}

fn add_bytes(out: &mut Listing, size: u64, limits: Limits) -> Result<(), TreeError> {
    out.bytes = out.bytes.saturating_add(size);
    if out.bytes > limits.max_bytes {
        return Err(TreeError::Refused(
            ".".into(),
            Refusal::TooLarge {
                limit: limits.max_bytes,
            },
        ));
    }
    Ok(())
}

/// Names git itself refuses to check out.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.eq_ignore_ascii_case(b".git")
        && !name.contains(&b'/')
        && !name.contains(&0)
}

#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    Dir,
    File,
    Link(&'a Path),
}

/// Refuses any symlink that, followed the way the kernel would follow it inside the
/// written snapshot, leaves the tree. A target that does not exist, or that passes
/// through a regular file, stops resolution (the kernel fails there too) and is allowed.
fn check_symlinks(entries: &[Entry]) -> Result<(), TreeError> {
    let nodes: HashMap<&Path, Node<'_>> = entries
        .iter()
        .map(|e| {
            let node = match &e.kind {
                Kind::Dir => Node::Dir,
                Kind::File { .. } => Node::File,
                Kind::Symlink { target } => Node::Link(target),
            };
            (e.path.as_path(), node)
        })
        .collect();
    for entry in entries {
        if let Kind::Symlink { target } = &entry.kind {
            let parent = entry.path.parent().unwrap_or(Path::new(""));
            resolve(&nodes, parent, target).map_err(|refusal| refused(&entry.path, refusal))?;
        }
    }
    Ok(())
}

fn resolve(nodes: &HashMap<&Path, Node<'_>>, start: &Path, target: &Path) -> Result<(), Refusal> {
    let escapes = || Refusal::SymlinkEscapes {
        target: target.display().to_string(),
    };
    let mut stack: Vec<OsString> = start.iter().map(OsStr::to_os_string).collect();
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, target).map_err(|()| escapes())?;
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        if component == ".." {
            if stack.pop().is_none() {
                return Err(escapes());
            }
            continue;
        }
        stack.push(component);
        let here: PathBuf = stack.iter().collect();
        match nodes.get(here.as_path()) {
            Some(Node::Dir) => {}
            // Past a file or a missing name the kernel stops (ENOTDIR / ENOENT).
            Some(Node::File) | None => return Ok(()),
            Some(Node::Link(next)) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Refusal::SymlinkLoop);
                }
                stack.pop();
                push_components(&mut pending, next).map_err(|()| Refusal::SymlinkEscapes {
                    target: next.display().to_string(),
                })?;
            }
        }
    }
    Ok(())
}

/// Pushes the components of a relative `path` so that the first is popped first.
/// Absolute paths are refused.
fn push_components(pending: &mut Vec<OsString>, path: &Path) -> Result<(), ()> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_os_string()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    pending.extend(parts.into_iter().rev());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(spec: &[(&str, Option<&str>)]) -> Vec<Entry> {
        spec.iter()
            .map(|(path, kind)| Entry {
                path: PathBuf::from(path),
                kind: match kind {
                    None if path.ends_with('/') => Kind::Dir,
                    None => Kind::File {
                        oid: Oid::ZERO_SHA1,
                        executable: false,
                    },
                    Some(t) => Kind::Symlink {
                        target: PathBuf::from(t),
                    },
                },
            })
            .map(|mut e| {
                e.path = PathBuf::from(e.path.to_str().unwrap().trim_end_matches('/'));
                e
            })
            .collect()
    }

    fn verdict(spec: &[(&str, Option<&str>)]) -> Result<(), Refusal> {
        match check_symlinks(&entries(spec)) {
            Ok(()) => Ok(()),
            Err(TreeError::Refused(_, r)) => Err(r),
            Err(TreeError::Git(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn links_inside_the_tree_are_allowed() {
        assert!(
            verdict(&[
                ("sites/", None),
                ("sites/a.yaml", None),
                ("link.yaml", Some("sites/a.yaml")),
                ("sites/up", Some("../sites/./a.yaml")),
                ("dangling", Some("nope/../../..")),
            ])
            .is_ok()
        );
    }

    #[test]
    fn absolute_and_escaping_links_are_refused() {
        assert!(matches!(
            verdict(&[("evil", Some("/etc/passwd"))]),
            Err(Refusal::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            verdict(&[("d/", None), ("d/evil", Some("../../x"))]),
            Err(Refusal::SymlinkEscapes { .. })
        ));
    }

    #[test]
    fn escapes_through_other_links_are_refused() {
        // `a/b/l` is the root itself, so `t` = root/.. leaves the tree although the
        // text `a/b/l/..` looks harmless.
        assert!(matches!(
            verdict(&[
                ("a/", None),
                ("a/b/", None),
                ("a/b/l", Some("../..")),
                ("t", Some("a/b/l/..")),
            ]),
            Err(Refusal::SymlinkEscapes { .. })
        ));
    }

    #[test]
    fn loops_are_refused() {
        assert_eq!(
            verdict(&[("x", Some("y/z")), ("y", Some("x"))]),
            Err(Refusal::SymlinkLoop)
        );
    }

    #[test]
    fn names_git_refuses_are_invalid() {
        for bad in [&b""[..], b".", b"..", b".GIT", b"a/b", b"a\0b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name(b".github"));
    }
}
