//! Which nats-server executable runs: `nats_server.binary` when set, else `nats-server` on PATH,
//! else a copy next to the quire executable (how a package or bundle can carry its own).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NAME: &str = "nats-server";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("nats_server.binary \"{}\" is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    #[error(
        "{wanted} not found on PATH{}: install it (Debian: apt install nats-server), put it next to the quire executable, or set nats_server.binary",
        next_to.as_ref().map(|d| format!(" nor in {}", d.display())).unwrap_or_default()
    )]
    NotFound {
        wanted: String,
        next_to: Option<PathBuf>,
    },
}

/// Resolves the executable from the configured value, the PATH variable and quire's own path.
pub fn resolve(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
    quire_exe: Option<&Path>,
) -> Result<PathBuf, BinaryError> {
    match configured {
        // A value with a slash is a path; a bare name is looked up like a shell would.
        Some(p) if p.components().count() > 1 => {
            if is_executable(p) {
                Ok(p.to_path_buf())
            } else {
                Err(BinaryError::NotExecutable(p.to_path_buf()))
            }
        }
        Some(name) => on_path(name.as_os_str(), path_var).ok_or_else(|| BinaryError::NotFound {
            wanted: format!("nats_server.binary \"{}\"", name.display()),
            next_to: None,
        }),
        None => {
            let next_to = quire_exe.and_then(Path::parent).map(Path::to_path_buf);
            on_path(OsStr::new(NAME), path_var)
                .or_else(|| {
                    next_to
                        .as_ref()
                        .map(|d| d.join(NAME))
                        .filter(|p| is_executable(p))
                })
                .ok_or_else(|| BinaryError::NotFound {
                    wanted: NAME.into(),
                    next_to,
                })
        }
    }
}

/// `resolve` with this process's PATH and executable.
pub fn resolve_here(configured: Option<&Path>) -> Result<PathBuf, BinaryError> {
    let exe = std::env::current_exe().ok();
    resolve(
        configured,
        std::env::var_os("PATH").as_deref(),
        exe.as_deref(),
    )
}

fn on_path(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn prefers_configured_then_path_then_next_to_quire() {
        let on_path_dir = tempfile::tempdir().unwrap();
        let exe_dir = tempfile::tempdir().unwrap();
        let quire = exe_dir.path().join("quire");
        let bundled = executable(exe_dir.path(), NAME);
        let path_var = on_path_dir.path().as_os_str();

        assert_eq!(
            resolve(None, Some(path_var), Some(&quire)).unwrap(),
            bundled
        );
        let from_path = executable(on_path_dir.path(), NAME);
        assert_eq!(
            resolve(None, Some(path_var), Some(&quire)).unwrap(),
            from_path
        );
        assert_eq!(
            resolve(Some(&bundled), Some(path_var), Some(&quire)).unwrap(),
            bundled
        );
        assert_eq!(
            resolve(Some(Path::new(NAME)), Some(path_var), None).unwrap(),
            from_path
        );
    }

    #[test]
    fn says_what_is_missing_and_how_to_fix_it() {
        let empty = tempfile::tempdir().unwrap();
        let quire = empty.path().join("quire");
        let err = resolve(None, Some(empty.path().as_os_str()), Some(&quire))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("nats-server not found on PATH nor in /"),
            "{err}"
        );
        assert!(
            err.contains("apt install nats-server") && err.contains("nats_server.binary"),
            "{err}"
        );

        let plain = empty.path().join("not-executable");
        std::fs::write(&plain, "").unwrap();
        let err = resolve(Some(&plain), None, None).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "nats_server.binary \"{}\" is not an executable file",
                plain.display()
            )
        );
    }
}
