//! Known answers for what must never change silently: chunk ids and cut
//! points (a change would stop new backups deduplicating against every old
//! one), content and source digests (restore compares them with what old
//! manifests recorded), and the bytes of format 2 manifest records. A
//! writer change that alters any of these fails here; a deliberate one
//! needs a new format version, and the old answers keep their test.

use sha2::Digest;
use vaultline_format::chunker::{self, Chunker};
use vaultline_format::manifest::{
    ChunkRef, ContentDigest, ContentHash, Entry, EntryKind, Footer, Header, Location, Owner,
    PackRecord, Record, RecordReader, SourceDigest, Xattr, write_record,
};
use vaultline_types::{ChunkId, Name, PackId, SnapshotId};

const CHUNK_KEY: [u8; 32] = [0x42; 32];

/// 3 MiB of xorshift bytes: compressible by nothing, cut by content alone.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn chunk_ids_are_keyed_blake3() {
    let id = chunker::chunk_id(&CHUNK_KEY, b"vaultline");
    assert_eq!(
        hex::encode(id.0),
        "738fe33a64d042ad4f493c8cb9a180f961fe0a3b8ec3109c3e7eb530ad1a976a",
        "chunk ids changed: no new backup would deduplicate against an old one"
    );
}

#[test]
fn cut_points_stay_where_they_are() {
    let data = pseudo_random(3 << 20);
    let mut lengths = Vec::new();
    Chunker::default()
        .chunk::<std::io::Error>(&data[..], |chunk| {
            lengths.push(chunk.len());
            Ok(())
        })
        .unwrap();
    assert_eq!(lengths.iter().sum::<usize>(), data.len());
    assert_eq!(
        format!("{lengths:?}"),
        "[477054, 563279, 238528, 305109, 392241, 414373, 84148, 171831, 499165]"
    );
}

#[test]
fn content_and_source_digests() {
    let mut blake3 = ContentDigest::new(ContentHash::Blake3);
    blake3.update(b"vault");
    blake3.update(b"line");
    let content = blake3.finish();
    assert_eq!(
        hex::encode(content),
        "b138902f74b1efb33ae7b03f39869fd1c3e5291955b3bc8f501d4b7cdfbb73fe"
    );
    let mut sha256 = ContentDigest::new(ContentHash::Sha256);
    sha256.update(b"vaultline");
    assert_eq!(hex::encode(sha256.finish()), sha256_hex(b"vaultline"));

    let mut source = SourceDigest::default();
    source.entry(&dir("docs"), [0; 32]);
    source.entry(&file("docs/a.txt", 9), content);
    let mut link = Entry {
        path: b"docs/link".to_vec(),
        kind: EntryKind::Symlink,
        target: Some(b"a.txt".to_vec()),
        ..Entry::default()
    };
    link.mode = 0o777;
    source.entry(&link, [0; 32]);
    assert_eq!(
        source.finish(),
        "11c08b9e0b8bbdd4137bb88d6499c7b873868b1919783148f3e0966b1ceb9e17"
    );
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::Dir,
        mode: 0o755,
        mtime: 1_764_000_000,
        ..Entry::default()
    }
}

fn file(path: &str, size: u64) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        mtime: 1_764_000_001,
        mtime_nanos: 250_000_000,
        size,
        ..Entry::default()
    }
}

fn format_2_records() -> Vec<Record> {
    let pack = PackId([0xAB; 32]);
    let header = Header {
        format: 2,
        tenant: Name::new("acme").unwrap(),
        source: Name::new("docs").unwrap(),
        snapshot: SnapshotId::parse("20261205T120000Z-0a1b2c3d").unwrap(),
        source_kind: "files".into(),
        created: 1_764_936_000,
        key_id: "k1".into(),
        content_hash: ContentHash::Blake3,
        source_config: None,
    };
    let mut entry = file("docs/a.txt", 9);
    entry.chunks = vec![ChunkRef {
        id: ChunkId([0x11; 32]),
        raw_length: 9,
        location: Some(Location {
            pack,
            offset: 44,
            length: 66,
        }),
    }];
    entry.owner = Some(Owner {
        uid: 1000,
        gid: 1000,
        user: Some("ada".into()),
        group: None,
    });
    entry.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"kept".to_vec(),
    }];
    let footer = Footer {
        entries: 2,
        bytes: 9,
        source_digest: "00".repeat(32),
        packs: vec![PackRecord {
            id: pack,
            size: 4096,
        }],
        tables: Vec::new(),
    };
    vec![
        Record::Header(header),
        Record::Entry(dir("docs")),
        Record::Entry(entry),
        Record::Footer(footer),
    ]
}

#[test]
fn format_2_manifest_records_keep_their_bytes() {
    let records = format_2_records();
    let mut bytes = Vec::new();
    for record in &records {
        write_record(&mut bytes, record).unwrap();
    }
    assert_eq!(
        sha256_hex(&bytes),
        "7a5440ce9788648bc17e5181dcb7a139feb2dd98759319e6d67b55554e73eb16",
        "manifest record bytes changed: bump the manifest format instead"
    );
    let read: Vec<Record> = RecordReader::new(&bytes[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read, records);
}
