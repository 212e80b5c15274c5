//! Snapshot manifests: a stream of MessagePack records.
//!
//! The extractor writes a draft (plain records, chunk locations unknown) to
//! staging; the uploader resolves every chunk's pack and offset and writes the
//! final manifest, zstd-compressed then age-encrypted to the tenant, to the
//! repository. Restore needs nothing else: no catalog, no NATS.

use crate::keys::Recipient;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use vaultline_types::{ChunkId, Name, PackId, SnapshotId};

pub use crate::digest::{ContentDigest, SourceDigest};

/// What an entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file; its content is `chunks`.
    #[default]
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `target`.
    Symlink,
    /// Another name of the file entry whose path is `target`, listed before
    /// it (manifest format 2).
    Hardlink,
    /// A named pipe (format 2).
    Fifo,
    /// A character device, number `rdev` (format 2; recreated only by root).
    CharDevice,
    /// A block device, number `rdev` (format 2; recreated only by root).
    BlockDevice,
    /// A socket: recorded so restore can report it, never recreated (a
    /// socket belongs to the process that listens on it).
    Socket,
}

impl EntryKind {
    /// The kind's byte in the [`SourceDigest`].
    pub fn digest_byte(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
            EntryKind::Hardlink => 3,
            EntryKind::Fifo => 4,
            EntryKind::CharDevice => 5,
            EntryKind::BlockDevice => 6,
            EntryKind::Socket => 7,
        }
    }
}

/// Who owned an entry (manifest format 2). Restore as root gives it back by
/// name where the restoring host knows the name, else by number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The user's name on the backed-up host, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group's name on the backed-up host, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One extended attribute (manifest format 2): `user.*`,
/// `security.capability`, or a POSIX ACL (`system.posix_acl_access`,
/// `system.posix_acl_default`) in the kernel's own encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Extended attribute names a manifest may hold; anything else (SELinux
/// labels, `trusted.*`) belongs to the host, not to the data.
pub fn xattr_kept(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Bytes of extended attributes (names and values) kept per entry; past it
/// the rest are left out with a warning at backup (ext4 allows about 4 KiB
/// per inode unless `ea_inode` is on, so this is rarely reached).
pub const XATTR_BYTES: usize = 64 << 10;

/// Where a chunk's sealed blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The pack holding it.
    pub pack: PackId,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
}

/// One chunk of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Keyed chunk id.
    pub id: ChunkId,
    /// Length once opened.
    pub raw_length: u32,
    /// Absent in drafts; always present in stored manifests.
    pub location: Option<Location>,
}

/// A file tree entry. Paths are relative, `/`-separated bytes (names need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path; never absolute and never containing `..` when written by vaultline.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nanos: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Link target (symlinks), or the path of the first name (hard links).
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<u8>>,
    /// Content chunks (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    /// Owner (format 2; older entries restore owned by the restoring user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Extended attributes and ACLs (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Files with more than one name: the link count at backup (format 2).
    /// Their other names in the snapshot are [`EntryKind::Hardlink`] entries.
    #[serde(default, skip_serializing_if = "is_single")]
    pub nlink: u32,
    /// Device number (devices; format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

fn is_single(nlink: &u32) -> bool {
    *nlink <= 1
}

/// First record of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Repository format version.
    pub format: u16,
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// Source type, e.g. `files`.
    pub source_kind: String,
    /// Unix seconds when extraction started.
    pub created: i64,
    /// Id of the tenant key the blobs are encrypted to.
    pub key_id: String,
    /// How file contents were digested for the source digest (absent in
    /// manifests written before BLAKE3: SHA-256).
    #[serde(default)]
    pub content_hash: ContentHash,
    /// The source as configured when the snapshot was taken (its path, URL
    /// or command; never a credential), so that a catalog rebuilt from the
    /// repository can back it up again. Absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_config: Option<vaultline_types::SourceConfig>,
}

/// The hash of file contents inside the source digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentHash {
    /// Manifests written before BLAKE3.
    #[default]
    Sha256,
    /// What this build writes: over twice as fast as SHA-256 on one core,
    /// and the extractor and restore hash every byte.
    Blake3,
}

/// A pack the snapshot references, with its recorded size (its id is its digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    pub id: PackId,
    pub size: u64,
}

/// Last record of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// Number of entries.
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// [`SourceDigest`] of the tree, hex.
    pub source_digest: String,
    /// Every pack the entries reference (final manifests only).
    #[serde(default)]
    pub packs: Vec<PackRecord>,
    /// Database sources: the row count of every table at dump time, in name
    /// order, which restore drills compare against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
}

/// Rows of one table when the dump was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// Qualified name, e.g. `public.orders` (PostgreSQL) or `orders` (MariaDB).
    pub name: String,
    pub rows: u64,
}

/// One manifest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Header(Header),
    Entry(Entry),
    Footer(Footer),
}

/// Appends one record.
///
/// # Errors
/// When writing fails.
pub fn write_record<W: Write>(out: &mut W, record: &Record) -> Result<()> {
    rmp_serde::encode::write_named(out, record).map_err(|e| match e {
        rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidDataWrite(io),
        )
        | rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidMarkerWrite(io),
        ) => Error::Io(io),
        other => Error::Io(std::io::Error::other(other.to_string())),
    })
}

/// Reads records until the end of the stream.
pub struct RecordReader<R: BufRead>(R);

impl<R: BufRead> RecordReader<R> {
    /// Reads records from a buffered stream.
    pub fn new(input: R) -> Self {
        RecordReader(input)
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Result<Record>> {
        match self.0.fill_buf() {
            Ok([]) => None,
            Ok(_) => Some(
                rmp_serde::from_read(&mut self.0).map_err(|e| Error::Corrupt {
                    what: "manifest",
                    reason: e.to_string(),
                }),
            ),
            Err(e) => Some(Err(Error::Io(e))),
        }
    }
}

/// Writes a stored manifest: records → zstd → age.
pub struct SealedWriter<W: Write>(
    zstd::stream::write::Encoder<'static, age::stream::StreamWriter<W>>,
);

impl<W: Write> SealedWriter<W> {
    /// Starts a manifest encrypted to `recipient`.
    ///
    /// # Errors
    /// When writing to `out` fails.
    pub fn new(out: W, recipient: &Recipient) -> Result<Self> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .expect("one X25519 recipient is always a valid set");
        let sealed = encryptor.wrap_output(out)?;
        Ok(SealedWriter(zstd::stream::write::Encoder::new(sealed, 3)?))
    }

    /// Appends one record.
    ///
    /// # Errors
    /// When writing fails.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        write_record(&mut self.0, record)
    }

    /// Flushes zstd and age and returns the writer.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(self) -> Result<W> {
        Ok(self.0.finish()?.finish()?)
    }
}

/// Opens a stored manifest for reading.
///
/// # Errors
/// [`Error::WrongKey`] when none of `keys` is the manifest's, [`Error::Corrupt`] when damaged.
pub fn open_sealed<R: Read>(
    input: R,
    keys: &crate::keys::Keyring,
) -> Result<RecordReader<impl BufRead + use<R>>> {
    let decryptor = age::Decryptor::new(input).map_err(crate::keys::map_decrypt)?;
    let plain = decryptor
        .decrypt(keys.age_identities())
        .map_err(crate::keys::map_decrypt)?;
    let decoder = zstd::stream::read::Decoder::new(plain)?;
    Ok(RecordReader::new(BufReader::new(decoder)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Identity, Keyring};

    fn sample() -> Vec<Record> {
        let snapshot = SnapshotId::parse("20261123T190000Z-0123abcd").unwrap();
        vec![
            Record::Header(Header {
                format: crate::FORMAT_VERSION,
                tenant: Name::new("acme").unwrap(),
                source: Name::new("docs").unwrap(),
                snapshot,
                source_kind: "files".into(),
                created: 1_795_000_000,
                key_id: "k".into(),
                content_hash: ContentHash::Blake3,
                source_config: None,
            }),
            Record::Entry(Entry {
                path: "dir/ü name".as_bytes().to_vec(),
                kind: EntryKind::File,
                mode: 0o644,
                mtime: 1,
                mtime_nanos: 2,
                size: 3,
                target: None,
                chunks: vec![ChunkRef {
                    id: ChunkId([9; 32]),
                    raw_length: 3,
                    location: Some(Location {
                        pack: PackId([8; 32]),
                        offset: 8,
                        length: 200,
                    }),
                }],
                ..Entry::default()
            }),
            Record::Footer(Footer {
                entries: 1,
                bytes: 3,
                source_digest: "00".into(),
                packs: vec![],
                tables: vec![TableRows {
                    name: "public.t".into(),
                    rows: 7,
                }],
            }),
        ]
    }

    #[test]
    fn sealed_manifests_round_trip_and_refuse_other_identities() {
        let id = Identity::generate();
        let mut writer = SealedWriter::new(Vec::new(), &id.to_public()).unwrap();
        for record in sample() {
            writer.write(&record).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let read: Vec<Record> = open_sealed(&bytes[..], &Keyring::from(&id))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(read, sample());
        assert!(matches!(
            open_sealed(&bytes[..], &Keyring::from(Identity::generate())).err(),
            Some(Error::WrongKey)
        ));
    }

    #[test]
    fn plain_drafts_round_trip() {
        let mut out = Vec::new();
        for record in sample() {
            write_record(&mut out, &record).unwrap();
        }
        let read: Vec<Record> = RecordReader::new(&out[..]).collect::<Result<_>>().unwrap();
        assert_eq!(read, sample());
    }
}
