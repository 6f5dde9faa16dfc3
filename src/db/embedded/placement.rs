//! Where the embedded cluster's folder lives, and undoing what a failed first start
//! made.
//!
//! When Carewire runs as root, the cluster runs as the unprivileged `postgres` user,
//! who must be able to search (`x`) every folder above the cluster's. That is often not
//! so: a root shell's home is mode 700, and so is every `mktemp -d`. Opening those
//! folders up would loosen permissions the operator never asked us to touch, so
//! instead the cluster moves to a folder that user owns and can reach (under its home,
//! `~postgres/carewire/<name>-<hash>/pg`), and the requested folder becomes a symbolic
//! link to it. The next start follows the link and finds the same cluster. A folder
//! that already holds a cluster is never replaced: if the user cannot reach it, the
//! start fails and names the folder in the way.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{EmbeddedError, RunAs};

/// Where the cluster ended up.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    /// The cluster's own folder (a real folder, never a link).
    pub pgdata: PathBuf,
    /// When the cluster lives elsewhere than asked: the folder asked for (now a link
    /// to `pgdata`) and why.
    pub relocated: Option<Relocation>,
}

/// Why the cluster is not where it was asked to be.
#[derive(Debug, Clone)]
pub struct Relocation {
    /// The folder asked for (`CAREWIRE_DATA_DIR/pg`), a symbolic link to the cluster.
    pub requested: PathBuf,
    /// The folder above it that the cluster's user cannot search, when this start
    /// moved it; `None` when an earlier start did and this one followed the link.
    pub blocked_by: Option<Blocked>,
}

/// A folder the cluster's user may not search, with what makes it so.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub folder: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.folder.display(), self.why)
    }
}

/// What this start created, so that a failed first start leaves nothing behind.
/// Entries are undone in reverse order.
#[derive(Debug, Default)]
pub(super) struct Created {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// A folder that did not exist. The one asked for is removed with what is in it;
    /// the folders made on the way to it only when empty, since another start may
    /// have put something there meanwhile (`~postgres/carewire` holds every
    /// relocated cluster).
    Folder { path: PathBuf, leaf: bool },
    /// A symbolic link we made.
    Link(PathBuf),
    /// A file we wrote.
    File(PathBuf),
    /// A folder that existed, empty, and that initdb filled: emptied again.
    Filled(PathBuf),
}

impl Created {
    /// `create_dir_all`, remembering each folder it made.
    pub fn folder(&mut self, path: &Path) -> Result<(), EmbeddedError> {
        let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
        for dir in missing.into_iter().rev() {
            match std::fs::create_dir(dir) {
                Ok(()) => self.steps.push(Step::Folder {
                    path: dir.to_path_buf(),
                    leaf: dir == path,
                }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(EmbeddedError::Io {
                        path: dir.to_path_buf(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn link(&mut self, target: &Path, link: &Path) -> Result<(), EmbeddedError> {
        std::os::unix::fs::symlink(target, link).map_err(|source| EmbeddedError::Io {
            path: link.to_path_buf(),
            source,
        })?;
        self.steps.push(Step::Link(link.to_path_buf()));
        Ok(())
    }

    fn file(&mut self, path: &Path, contents: &str) -> Result<(), EmbeddedError> {
        std::fs::write(path, contents).map_err(|source| EmbeddedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.steps.push(Step::File(path.to_path_buf()));
        Ok(())
    }

    /// initdb is about to fill `pgdata`: remember to empty it (or remove it, when we
    /// made it) if the start fails.
    pub fn filling(&mut self, pgdata: &Path) {
        let made_here = self
            .steps
            .iter()
            .any(|s| matches!(s, Step::Folder { path, .. } if path == pgdata));
        if !made_here {
            self.steps.push(Step::Filled(pgdata.to_path_buf()));
        }
    }

    /// Undoes every step, newest first. Best effort: a step that cannot be undone is
    /// logged and the rest still run.
    pub fn undo(self) {
        for step in self.steps.into_iter().rev() {
            let (path, result) = match &step {
                Step::Folder { path, leaf: true } => (path, std::fs::remove_dir_all(path)),
                Step::Folder { path, leaf: false } => (path, std::fs::remove_dir(path)),
                Step::Link(p) | Step::File(p) => (p, std::fs::remove_file(p)),
                Step::Filled(p) => (p, empty_folder(p)),
            };
            if let Err(e) = result
                && !matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                )
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot clean up after the failed start");
            }
        }
    }
}

fn empty_folder(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Decides where the cluster for `requested` (an absolute path) lives, creating the
/// folders (and, when it moves, the link) on the way. `run_as` is the user the cluster
/// runs as when we are root.
pub(super) fn place(
    requested: &Path,
    run_as: Option<&RunAs>,
    created: &mut Created,
) -> Result<Placement, EmbeddedError> {
    // A link: an earlier start moved the cluster (or the operator pointed it
    // elsewhere). Follow it; never move a cluster twice.
    if let Ok(target) = std::fs::read_link(requested) {
        let target = match requested.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
        created.folder(&target)?;
        if let Some(user) = run_as
            && let Some(blocked) = first_unsearchable(user, &target)?
        {
            return Err(EmbeddedError::Unreachable {
                folder: target,
                blocked,
                advice: "give that folder search permission for it, or point the link elsewhere".into(),
            });
        }
        return Ok(Placement {
            pgdata: target,
            relocated: Some(Relocation {
                requested: requested.to_path_buf(),
                blocked_by: None,
            }),
        });
    }
    created.folder(requested)?;
    let here = Placement {
        pgdata: requested.to_path_buf(),
        relocated: None,
    };
    let Some(user) = run_as else {
        return Ok(here);
    };
    let Some(blocked) = first_unsearchable(user, requested)? else {
        return Ok(here);
    };
    if !is_empty_folder(requested)? {
        // A cluster (or anything else) is already there: moving would start an empty
        // cluster beside the operator's data.
        return Err(EmbeddedError::Unreachable {
            folder: requested.to_path_buf(),
            blocked,
            advice: format!(
                "the folder is not empty, so Carewire will not start a new cluster elsewhere; let `{}` search \
                 that folder, or set CAREWIRE_DATA_DIR to another folder",
                user.name
            ),
        });
    }
    let home = home_of(&user.name).ok_or_else(|| EmbeddedError::Unreachable {
        folder: requested.to_path_buf(),
        blocked: blocked.clone(),
        advice: format!(
            "`{}` has no home folder to keep the cluster in instead; set CAREWIRE_DATA_DIR to a folder it can \
             reach (every folder above it searchable by others), or set DATABASE_URL",
            user.name
        ),
    })?;
    if let Some(home_blocked) = first_unsearchable(user, &home.join("."))? {
        return Err(EmbeddedError::Unreachable {
            folder: requested.to_path_buf(),
            blocked,
            advice: format!(
                "nor can it reach its home {home_blocked} to keep the cluster there; set CAREWIRE_DATA_DIR to a \
                 folder it can reach, or set DATABASE_URL",
            ),
        });
    }
    let base = home.join("carewire").join(relocated_name(requested));
    let pgdata = base.join("pg");
    created.folder(&pgdata)?;
    for dir in [home.join("carewire"), base.clone(), pgdata.clone()] {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).map_err(|source| {
            EmbeddedError::Io {
                path: dir.clone(),
                source,
            }
        })?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| EmbeddedError::Io { path: dir, source })?;
    }
    // Say what the folder is for to whoever finds it under the home.
    created.file(
        &base.join("origin"),
        &format!(
            "Carewire's embedded PostgreSQL cluster for {}\n",
            requested.display()
        ),
    )?;
    // The empty folder asked for becomes the link (it is empty: checked above).
    std::fs::remove_dir(requested).map_err(|source| EmbeddedError::Io {
        path: requested.to_path_buf(),
        source,
    })?;
    created.link(&pgdata, requested)?;
    Ok(Placement {
        pgdata,
        relocated: Some(Relocation {
            requested: requested.to_path_buf(),
            blocked_by: Some(blocked),
        }),
    })
}

fn is_empty_folder(dir: &Path) -> Result<bool, EmbeddedError> {
    let mut entries = std::fs::read_dir(dir).map_err(|source| EmbeddedError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(entries.next().is_none())
}

/// `<last components of the path>-<hash of the whole path>`: readable, unique per
/// requested folder, and short enough for the socket path.
fn relocated_name(requested: &Path) -> String {
    let hash = Sha256::digest(requested.as_os_str().as_encoded_bytes());
    let readable: String = requested
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let readable = readable.trim_matches('-');
    let start = readable.len().saturating_sub(24);
    let readable = readable[start..].trim_start_matches('-');
    format!("{readable}-{}", hex::encode(&hash[..6]))
}

/// The first folder above `path` (outermost first) that `user` may not search, with
/// its mode and owner. Asks the kernel, as that user, rather than reading mode bits,
/// so ACLs and groups count exactly as they will for PostgreSQL.
fn first_unsearchable(user: &RunAs, path: &Path) -> Result<Option<Blocked>, EmbeddedError> {
    let mut folders: Vec<&Path> = path.ancestors().skip(1).collect();
    folders.reverse();
    let script = r#"for d do [ -x "$d" ] || { printf '%s' "$d"; exit 3; }; done"#;
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(&folders)
        .uid(user.uid)
        .gid(user.gid)
        .current_dir("/")
        .output()
        .map_err(|source| EmbeddedError::Io {
            path: PathBuf::from("/bin/sh"),
            source,
        })?;
    match output.status.code() {
        Some(0) => Ok(None),
        Some(3) => {
            let folder = PathBuf::from(String::from_utf8_lossy(&output.stdout).into_owned());
            let why = describe(&folder, &user.name);
            Ok(Some(Blocked { folder, why }))
        }
        _ => Err(EmbeddedError::Command {
            what: format!("checking which folders `{}` can reach", user.name),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}

fn describe(folder: &Path, user: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(folder) {
        Ok(meta) => format!(
            "mode {:04o}, owner uid {}: `{user}` may not enter it",
            meta.mode() & 0o7777,
            meta.uid()
        ),
        Err(e) => format!("{e}"),
    }
}

/// The home folder of `user`, from the system's user database.
fn home_of(user: &str) -> Option<PathBuf> {
    let output = Command::new("getent").args(["passwd", user]).output().ok();
    let line = match output {
        Some(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => std::fs::read_to_string("/etc/passwd")
            .ok()?
            .lines()
            .find(|l| l.split(':').next() == Some(user))?
            .to_owned(),
    };
    let home = line.trim().split(':').nth(5)?;
    let home = PathBuf::from(home);
    (home.is_absolute() && home.is_dir()).then_some(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_names_are_readable_and_differ_per_folder() {
        let a = relocated_name(Path::new("/root/clinic/.carewire/pg"));
        let b = relocated_name(Path::new("/root/other/.carewire/pg"));
        assert!(a.contains("clinic--carewire-pg-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, relocated_name(Path::new("/root/clinic/.carewire/pg")));
    }

    #[test]
    fn relocated_names_stay_short_for_long_paths() {
        let long = format!("/{}/pg", "very-long-folder-name/".repeat(10));
        let name = relocated_name(Path::new(&long));
        assert!(name.len() <= 24 + 1 + 12, "{name}");
        assert!(!name.starts_with('-'), "{name}");
    }

    #[test]
    fn a_failed_start_removes_the_folders_it_made_and_keeps_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let kept = root.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        let mut created = Created::default();
        created.folder(&kept.join("a/b/pg")).unwrap();
        std::fs::write(kept.join("a/b/pg/PG_VERSION"), "15").unwrap();
        created.undo();
        assert!(kept.exists());
        assert!(!kept.join("a").exists());
    }

    #[test]
    fn a_failed_initdb_in_an_existing_folder_empties_it_but_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let pgdata = root.path().join("pg");
        std::fs::create_dir(&pgdata).unwrap();
        let mut created = Created::default();
        created.folder(&pgdata).unwrap();
        created.filling(&pgdata);
        std::fs::create_dir(pgdata.join("base")).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "15").unwrap();
        created.undo();
        assert!(pgdata.is_dir());
        assert_eq!(std::fs::read_dir(&pgdata).unwrap().count(), 0);
    }
}
