//! Restore fidelity: every name the filesystem allowed, read-only
//! directories, owners, hard links, extended attributes and ACLs, special
//! and sparse files, restored as root and as an ordinary user.

use crate::harness::{Env, assert_verified, binary, mixed_bytes};
use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Two users every Debian system has, and the one restores run as.
const DAEMON: u32 = 1;
const BIN: u32 = 2;
const NOBODY: u32 = 65534;

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn chown(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .with_context(|| format!("chown {}", path.display()))
}

/// A POSIX ACL in the kernel's xattr encoding: version 2, then
/// `(tag, permissions, id)` entries in tag order.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(perm.to_le_bytes());
        out.extend(id.to_le_bytes());
    }
    out
}

/// user::rw- user:daemon:r-- group::r-- mask::r-- other::---
fn sample_acl() -> Vec<u8> {
    const ANY: u32 = u32::MAX;
    acl(&[
        (0x01, 6, ANY),
        (0x02, 4, DAEMON),
        (0x04, 4, ANY),
        (0x10, 4, ANY),
        (0x20, 0, ANY),
    ])
}

/// `cap_net_bind_service=ep` in the kernel's `vfs_cap_data` encoding.
fn file_capability() -> Vec<u8> {
    let mut out = 0x0200_0001u32.to_le_bytes().to_vec();
    for word in [1u32 << 10, 0, 0, 0] {
        out.extend(word.to_le_bytes());
    }
    out
}

/// The fidelity tree. Returns the path of its 3,000-byte file.
pub(crate) fn build_fidelity_tree(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    // The longest name there is, and a path longer than most tools expect.
    std::fs::write(
        root.join(format!("{}.txt", "n".repeat(251))),
        "a long name\n",
    )?;
    let mut deep = root.to_path_buf();
    for level in 0..15 {
        deep.push(format!("{level:02}{}", "d".repeat(197)));
    }
    std::fs::create_dir_all(&deep)?;
    let deep_file = deep.join("deep.txt");
    std::fs::write(&deep_file, "at the bottom\n")?;

    // Read-only directories, applied after their contents.
    let ro = root.join("ro");
    std::fs::create_dir(&ro)?;
    std::fs::write(ro.join("inside.txt"), "in a 0555 directory\n")?;
    std::fs::write(ro.join("second.txt"), "also\n")?;
    let rox = root.join("rox");
    std::fs::create_dir_all(rox.join("sub"))?;
    std::fs::write(rox.join("sub/file.txt"), "under a 0500 directory\n")?;

    // Hard links: four names of one file, and one across directories.
    let links = root.join("links");
    std::fs::create_dir_all(links.join("a"))?;
    std::fs::create_dir_all(links.join("b"))?;
    std::fs::write(links.join("first"), "one file, four names\n")?;
    for name in ["second", "third", "fourth"] {
        std::fs::hard_link(links.join("first"), links.join(name))?;
    }
    std::fs::write(links.join("a/x"), mixed_bytes(300 << 10, 7))?;
    std::fs::hard_link(links.join("a/x"), links.join("b/y"))?;

    // Extended attributes and ACLs.
    let attrs = root.join("attrs.txt");
    std::fs::write(&attrs, "with attributes\n")?;
    chmod(&attrs, 0o640)?;
    rustix::fs::setxattr(
        &attrs,
        "user.comment",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    )?;
    rustix::fs::setxattr(
        &attrs,
        "user.bytes",
        &[0, 1, 2, 255],
        rustix::fs::XattrFlags::empty(),
    )?;
    rustix::fs::setxattr(
        &attrs,
        "system.posix_acl_access",
        &sample_acl(),
        rustix::fs::XattrFlags::empty(),
    )?;
    let acl_dir = root.join("acl-dir");
    std::fs::create_dir(&acl_dir)?;
    rustix::fs::setxattr(
        &acl_dir,
        "system.posix_acl_default",
        &sample_acl(),
        rustix::fs::XattrFlags::empty(),
    )?;

    // A FIFO, a socket, and a 1 GiB file holding 1 MiB of data.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )?;
    drop(std::os::unix::net::UnixListener::bind(root.join("socket"))?);
    let sparse = std::fs::File::create(root.join("sparse.img"))?;
    sparse.set_len(1 << 30)?;
    std::os::unix::fs::FileExt::write_all_at(&sparse, &mixed_bytes(1 << 20, 9), 300 << 20)?;
    drop(sparse);

    if is_root() {
        let owners = root.join("owners");
        std::fs::create_dir(&owners)?;
        std::fs::write(owners.join("daemon.txt"), "daemon's\n")?;
        chown(&owners.join("daemon.txt"), DAEMON)?;
        std::fs::write(owners.join("bin.txt"), "bin's\n")?;
        chown(&owners.join("bin.txt"), BIN)?;
        std::fs::write(owners.join("setuid"), "#!/bin/sh\n")?;
        chown(&owners.join("setuid"), DAEMON)?;
        chmod(&owners.join("setuid"), 0o4755)?;
        // A file capability (what `setcap cap_net_bind_service=ep` writes):
        // revision 2 with the effective bit, then permitted and inheritable
        // words.
        std::fs::write(owners.join("capable"), "#!/bin/sh\n")?;
        chmod(&owners.join("capable"), 0o755)?;
        rustix::fs::setxattr(
            owners.join("capable"),
            "security.capability",
            &file_capability(),
            rustix::fs::XattrFlags::empty(),
        )?;
        chown(&owners, BIN)?;
        // /dev/null's numbers: a device only root can make.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )?;
    }
    chmod(&ro, 0o555)?;
    chmod(&rox, 0o500)?;
    filetime::set_file_mtime(&ro, filetime::FileTime::from_unix_time(1_600_000_000, 5))?;
    filetime::set_file_mtime(
        root.join("links/a"),
        filetime::FileTime::from_unix_time(1_500_000_000, 0),
    )?;
    Ok(deep_file)
}

/// What a restore must reproduce of one entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: &'static str,
    pub(crate) mode: u32,
    pub(crate) mtime: (i64, i64),
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u64,
    pub(crate) rdev: u64,
    pub(crate) content: Option<String>,
    pub(crate) link: Option<PathBuf>,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

fn xattrs_of(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("security.selinux") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])?;
        value.truncate(len);
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}

/// Every entry under `root` (not `root` itself), by relative path.
pub(crate) fn describe(root: &Path) -> Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    for item in walkdir::WalkDir::new(root).min_depth(1) {
        let item = item?;
        let meta = item.path().symlink_metadata()?;
        let file_type = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if file_type.is_dir() {
            "dir"
        } else if file_type.is_symlink() {
            "symlink"
        } else if file_type.is_file() {
            "file"
        } else if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_char_device() {
            "chardev"
        } else {
            "socket"
        };
        let content = if file_type.is_file() {
            use sha2::Digest;
            use std::io::Read;
            let (mut hasher, mut file) = (sha2::Sha256::new(), std::fs::File::open(item.path())?);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf)? {
                    0 => break,
                    n => hasher.update(&buf[..n]),
                }
            }
            Some(hex::encode(hasher.finalize()))
        } else {
            None
        };
        let rel = item
            .path()
            .strip_prefix(root)?
            .to_string_lossy()
            .into_owned();
        out.insert(
            rel,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                mtime: (meta.mtime(), meta.mtime_nsec()),
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: if file_type.is_dir() { 0 } else { meta.nlink() },
                rdev: meta.rdev(),
                content,
                link: file_type
                    .is_symlink()
                    .then(|| std::fs::read_link(item.path()))
                    .transpose()?,
                xattrs: if file_type.is_symlink() {
                    vec![]
                } else {
                    xattrs_of(item.path())?
                },
            },
        );
    }
    Ok(out)
}

/// Asserts `got` matches `want` entry by entry, after `adjust` says what a
/// restore is expected to change.
pub(crate) fn assert_restored(
    want: &BTreeMap<String, Node>,
    got: &BTreeMap<String, Node>,
    what: &str,
    adjust: impl Fn(&str, &mut Node),
) {
    let expected: BTreeMap<String, Node> = want
        .iter()
        .filter(|(_, node)| node.kind != "socket")
        .map(|(path, node)| {
            let mut node = node.clone();
            adjust(path, &mut node);
            (path.clone(), node)
        })
        .collect();
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: the paths differ"
    );
    for (path, node) in &expected {
        assert_eq!(&got[path], node, "{what}: {path} differs");
    }
}

/// `vaultline restore` of acme's `snapshot` with nothing but a repository
/// directory and an identity file; with `as_nobody`, that copy of the
/// binary runs as user nobody. Returns whether it succeeded, and its stderr.
pub(crate) async fn restore_offline(
    as_nobody: Option<&Path>,
    snapshot: &str,
    identity: &Path,
    repository: &Path,
    target: &Path,
) -> Result<(bool, String)> {
    let mut command = match as_nobody {
        Some(vaultline) => {
            let mut setpriv = tokio::process::Command::new("setpriv");
            setpriv
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(vaultline);
            setpriv
        }
        None => tokio::process::Command::new(binary("vaultline")?),
    };
    let out = command
        .args(["restore", snapshot, "--tenant", "acme", "--identity"])
        .arg(identity)
        .arg("--repo")
        .arg(format!("file://{}", repository.display()))
        .arg("--to")
        .arg(target)
        .env_remove("VAULTLINE_CONFIG")
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Backs the tree up through the whole pipeline and exports acme's identity.
pub(crate) async fn backed_up(
    env: &Env,
    tree: &Path,
) -> Result<(vaultline_types::SnapshotId, PathBuf)> {
    env.tenant_with_source(tree).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    node.shutdown().await;
    let identity = env.export_identity("acme").await?;
    Ok((row.id, identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fidelity_tree_restores_faithfully_as_root_and_as_a_user() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    build_fidelity_tree(&tree)?;
    let want = describe(&tree)?;
    ensure!(
        want.values().any(|n| n.kind == "socket"),
        "the tree has a socket"
    );
    let (snapshot, identity) = backed_up(&env, &tree).await?;

    // As whoever runs the suite (root in CI): everything comes back.
    let target = env.path("restored");
    let (ok, _, stderr) = env.restore_cli(&snapshot, &target).await?;
    ensure!(ok, "restore failed: {stderr}");
    assert!(stderr.contains("1 sockets skipped"), "{stderr}");
    let got = describe(&target)?;
    assert_restored(&want, &got, "the restore", |_, _| {});
    assert_eq!(got["links/first"].nlink, 4);
    assert_eq!(got["links/b/y"].nlink, 2);
    assert!(
        got["attrs.txt"]
            .xattrs
            .iter()
            .any(|(n, v)| n == "system.posix_acl_access" && *v == sample_acl())
    );
    let sparse = std::fs::metadata(target.join("sparse.img"))?;
    assert_eq!(sparse.len(), 1 << 30);
    assert!(
        sparse.blocks() * 512 <= 2 << 20,
        "sparse.img takes {} bytes",
        sparse.blocks() * 512
    );

    if !is_root() {
        eprintln!("not root: the unprivileged restore below needs root to switch users");
        return Ok(());
    }
    assert_eq!(got["owners/daemon.txt"].uid, DAEMON);
    assert_eq!(got["owners/setuid"].mode, 0o4755);
    assert_eq!(
        got["owners/capable"].xattrs,
        vec![("security.capability".to_owned(), file_capability())]
    );

    // As nobody, with nothing but the repository and the identity file.
    chmod(env.dir.path(), 0o755)?;
    for item in walkdir::WalkDir::new(env.path("repository")) {
        let item = item?;
        chmod(
            item.path(),
            if item.file_type().is_dir() {
                0o755
            } else {
                0o644
            },
        )?;
    }
    chmod(&identity, 0o644)?;
    let bin = env.path("bin");
    std::fs::create_dir(&bin)?;
    std::fs::copy(binary("vaultline")?, bin.join("vaultline"))?;
    chmod(&bin.join("vaultline"), 0o755)?;
    let target = env.path("as-nobody");
    std::fs::create_dir(&target)?;
    chown(&target, NOBODY)?;
    let (ok, stderr) = restore_offline(
        Some(&bin.join("vaultline")),
        snapshot.as_str(),
        &identity,
        &env.path("repository"),
        &target,
    )
    .await?;
    ensure!(ok, "the restore as nobody failed: {stderr}");
    assert!(stderr.contains("ownership not restored"), "{stderr}");
    assert!(
        stderr.contains("setuid/setgid bits dropped from 1"),
        "{stderr}"
    );
    assert!(stderr.contains("1 device nodes skipped"), "{stderr}");
    assert!(
        stderr.contains("1 extended attributes not restored"),
        "{stderr}"
    );
    let got = describe(&target)?;
    let want: BTreeMap<String, Node> = want
        .into_iter()
        .filter(|(_, n)| n.kind != "chardev")
        .collect();
    assert_restored(&want, &got, "the restore as nobody", |_, node| {
        node.uid = NOBODY;
        node.gid = 65534;
        node.mode &= !0o6000;
        // File capabilities need root to set.
        node.xattrs
            .retain(|(name, _)| name != "security.capability");
    });
    Ok(())
}
