//! Golden bytes: a manifest and a pack written by the last build of
//! manifest format 1 (commit 7793ea7, through the whole pipeline) still read,
//! field by field and blob by blob; so do a format 2 pack (written by
//! e5193b5's copy-free pack writer, whose layout is the one format 2 always
//! had) and a format 2 manifest holding every kind of record and field.

use vaultline_format::keys::parse_identity;
use vaultline_format::manifest::{ContentHash, EntryKind, Record, open_sealed};

#[test]
fn a_format_1_manifest_still_reads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/manifest-format1.key")).unwrap())
            .unwrap();
    let sealed = std::fs::read(format!("{dir}/manifest-format1.age")).unwrap();
    let records: Vec<Record> = open_sealed(&sealed[..], &identity.clone().into())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let Record::Header(header) = &records[0] else {
        panic!("no header first")
    };
    assert_eq!(header.format, 1);
    assert_eq!(header.snapshot.as_str(), "20261129T121902Z-18192296");
    assert_eq!(header.content_hash, ContentHash::Blake3);
    let entries: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Entry(e) => Some(e),
            _ => None,
        })
        .collect();
    let listed: Vec<(&str, EntryKind, u32)> = entries
        .iter()
        .map(|e| (std::str::from_utf8(&e.path).unwrap(), e.kind, e.mode))
        .collect();
    assert_eq!(
        listed,
        [
            ("docs", EntryKind::Dir, 0o755),
            ("docs/deeper", EntryKind::Dir, 0o755),
            ("docs/deeper/data.bin", EntryKind::File, 0o644),
            ("docs/readme.md", EntryKind::File, 0o644),
            ("empty", EntryKind::File, 0o644),
            ("link", EntryKind::Symlink, 0o777),
            ("script.sh", EntryKind::File, 0o750),
        ]
    );
    // Format 1 knew nothing of owners, attributes, link counts or devices.
    assert!(
        entries
            .iter()
            .all(|e| e.owner.is_none() && e.xattrs.is_empty() && e.nlink == 0 && e.rdev.is_none())
    );
    let data = entries[2];
    assert_eq!((data.size, data.mtime), (200 << 10, 1_700_000_002));
    assert!(data.chunks.iter().all(|c| c.location.is_some()));
    let Some(Record::Footer(footer)) = records.last() else {
        panic!("no footer last")
    };
    assert_eq!(footer.entries, 7);
    assert_eq!(footer.packs.len(), 1);
}

/// The blobs of the pack fixtures: compressible text, 70,000 bytes of
/// noise, and an empty chunk.
fn pack_fixture_chunks() -> [(vaultline_types::ChunkId, Vec<u8>); 3] {
    use vaultline_types::ChunkId;
    let random: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    [
        (ChunkId([1; 32]), b"compressible text, ".repeat(200)),
        (ChunkId([2; 32]), random),
        (ChunkId([3; 32]), Vec::new()),
    ]
}

/// Reads the pack fixture `name`, pinned by its SHA-256, blob by blob.
fn check_pack_fixture(name: &str, sha256: &str) -> Vec<u8> {
    use sha2::Digest;
    use vaultline_format::pack::{
        FRAME_BYTES, HEAD_BYTES, Header, PackKey, check_layout, read_index,
    };

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/{name}.key")).unwrap()).unwrap();
    let pack = std::fs::read(format!("{dir}/{name}")).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&pack)), sha256);
    let index = read_index(&pack, &identity.clone().into()).unwrap();
    let chunks = pack_fixture_chunks();
    let listed: Vec<_> = index
        .iter()
        .map(|e| (e.id, e.raw_length as usize))
        .collect();
    let expected: Vec<_> = chunks.iter().map(|(id, c)| (*id, c.len())).collect();
    assert_eq!(listed, expected);
    let tail = &pack[pack.len() - FRAME_BYTES..];
    check_layout(&pack[..HEAD_BYTES], tail, pack.len() as u64, &index).unwrap();
    let Header::Key(key, _) = PackKey::read(&pack, &std::sync::Arc::new(identity.into())).unwrap()
    else {
        panic!("the whole pack holds its header")
    };
    for (entry, (_, plain)) in index.iter().zip(chunks) {
        let at = entry.offset as usize;
        let sealed = &pack[at..at + entry.length as usize];
        assert_eq!(key.open(&entry.id, sealed).unwrap(), plain);
    }
    pack
}

/// A format 2 pack (`nonce | sealed frame | tag` per blob, the sealed
/// index, its length, the end magic): it must read, blob by blob, in every
/// later build.
#[test]
fn a_format_2_pack_still_reads() {
    check_pack_fixture(
        "pack-format2",
        "5222aac9b77ef4c81640fc08bb0a384520834f0ee47d83b2996ceb92c029d2fb",
    );
}

/// A format 3 pack, as this build writes it: format 2 with the id of the
/// tenant key it is sealed to in its header. Only that key opens it.
#[test]
fn a_format_3_pack_still_reads_and_names_its_key() {
    use vaultline_format::keys::{Identity, Keyring, key_id};
    use vaultline_format::pack::PackKey;
    let pack = check_pack_fixture("pack-format3", PACK_FORMAT_3_SHA256);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/pack-format3.key")).unwrap())
            .unwrap();
    let named = key_id(&identity.to_public().to_string());
    assert_eq!(&pack[..8], b"VLPACK03");
    assert_eq!(pack[8], 16);
    assert_eq!(PackKey::key_id(&pack), Some(named.as_str()));
    // A keyring with another key first still picks the named one; one
    // without it fails as the wrong key, without trying to decrypt.
    let other = Identity::generate();
    let both = Keyring::new([other.clone(), identity]);
    assert!(PackKey::read(&pack, &std::sync::Arc::new(both)).is_ok());
    assert!(matches!(
        PackKey::read(&pack, &std::sync::Arc::new(Keyring::from(other))),
        Err(vaultline_format::Error::WrongKey)
    ));
}

const PACK_FORMAT_3_SHA256: &str =
    "58beedb3676cf52217db4aa93711758d34db3dbb4bb7bcc8359f41c890fd6ba5";

/// Writes `pack-format3` and its key when they are missing (delete both by
/// hand to write them again). The fixture must then never change.
#[test]
#[ignore = "writes the format 3 pack fixture when missing"]
fn write_the_format_3_pack_fixture() {
    use vaultline_format::blob::Compressor;
    use vaultline_format::keys::{Identity, identity_file_text};
    use vaultline_format::pack::PackWriter;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    if std::path::Path::new(&format!("{dir}/pack-format3")).exists() {
        return;
    }
    let identity = Identity::generate();
    let mut compressor = Compressor::new(3).unwrap();
    let mut writer = PackWriter::new(Vec::new(), &identity.to_public()).unwrap();
    for (id, chunk) in pack_fixture_chunks() {
        writer.add(id, &chunk, &mut compressor).unwrap();
    }
    let pack = writer.finish(&mut compressor).unwrap();
    std::fs::write(
        format!("{dir}/pack-format3.key"),
        identity_file_text(&identity, "vaultline test fixture: protects nothing"),
    )
    .unwrap();
    std::fs::write(format!("{dir}/pack-format3"), pack.out).unwrap();
}

/// The pack of the format 1 snapshot in `tests/fixtures/format1` (written
/// by 7793ea7, before the pack writer was rewritten): it is named by its
/// SHA-256, its index and layout check, every blob opens to its recorded
/// length, and the index places every chunk exactly where that snapshot's
/// manifest (`manifest-format1.age`) says it is.
#[test]
fn a_pack_written_beside_manifest_format_1_still_reads() {
    use sha2::Digest;
    use std::collections::BTreeMap;
    use vaultline_format::pack::{FRAME_BYTES, Header, PackKey, check_layout, read_index};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/format1");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/acme.key")).unwrap()).unwrap();
    let name = "27448554e78c770f99d985657bd6f37fff5910d29dde1fb5865c2574816d289b";
    let pack = std::fs::read(format!("{dir}/repository/tenants/acme/packs/27/{name}")).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&pack)), name);
    let index = read_index(&pack, &identity.clone().into()).unwrap();
    let tail = &pack[pack.len() - FRAME_BYTES..];
    check_layout(&pack[..FRAME_BYTES], tail, pack.len() as u64, &index).unwrap();
    let manifest = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/manifest-format1.age"
    ))
    .unwrap();
    let placed: BTreeMap<_, _> = open_sealed(&manifest[..], &identity.clone().into())
        .unwrap()
        .filter_map(|record| match record.unwrap() {
            Record::Entry(entry) => Some(entry.chunks),
            _ => None,
        })
        .flatten()
        .map(|c| {
            let at = c.location.expect("format 1 records where each chunk is");
            assert_eq!(hex::encode(at.pack.0), name);
            (c.id, (at.offset, at.length, c.raw_length))
        })
        .collect();
    let indexed: BTreeMap<_, _> = index
        .iter()
        .map(|e| (e.id, (e.offset, e.length, e.raw_length)))
        .collect();
    assert!(!indexed.is_empty());
    assert_eq!(indexed, placed);
    let Header::Key(key, _) = PackKey::read(&pack, &std::sync::Arc::new(identity.into())).unwrap()
    else {
        panic!("the whole pack holds its header")
    };
    for entry in &index {
        let at = entry.offset as usize;
        let plain = key
            .open(&entry.id, &pack[at..at + entry.length as usize])
            .unwrap();
        assert_eq!(plain.len(), entry.raw_length as usize);
    }
}

/// Every kind of record manifest format 2 has, with every optional field
/// set somewhere: what `manifest-format2.age` must read back as.
fn format_2_records() -> Vec<Record> {
    use vaultline_format::manifest::{
        ChunkRef, Entry, Footer, Header, Location, Owner, PackRecord, TableRows, Xattr,
    };
    use vaultline_types::{ChunkId, Name, PackId, SnapshotId};
    let owner = |uid, user: &str| {
        Some(Owner {
            uid,
            gid: uid + 1,
            user: Some(user.to_owned()),
            group: None,
        })
    };
    let entry = |path: &str, kind, mode| Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        mtime: 1_764_000_000,
        mtime_nanos: 123_456_789,
        owner: owner(1000, "alice"),
        ..Entry::default()
    };
    let pack = PackId([0xab; 32]);
    vec![
        Record::Header(Header {
            format: 2,
            tenant: Name::new("acme").unwrap(),
            source: Name::new("docs").unwrap(),
            snapshot: SnapshotId::parse("20261205T120000Z-0badcafe").unwrap(),
            source_kind: "files".into(),
            created: 1_764_936_000,
            key_id: "0123456789abcdef".into(),
            content_hash: ContentHash::Blake3,
            source_config: None,
        }),
        Record::Entry(Entry {
            xattrs: vec![Xattr {
                name: b"user.note".to_vec(),
                value: b"kept".to_vec(),
            }],
            ..entry("d", EntryKind::Dir, 0o2775)
        }),
        Record::Entry(Entry {
            size: 70_000,
            nlink: 2,
            chunks: vec![
                ChunkRef {
                    id: ChunkId([1; 32]),
                    raw_length: 65_536,
                    location: Some(Location {
                        pack,
                        offset: 0,
                        length: 40_000,
                    }),
                },
                ChunkRef {
                    id: ChunkId([2; 32]),
                    raw_length: 4_464,
                    location: None,
                },
            ],
            ..entry("d/data.bin", EntryKind::File, 0o4750)
        }),
        Record::Entry(Entry {
            target: Some(b"d/data.bin".to_vec()),
            ..entry("d/hard", EntryKind::Hardlink, 0o4750)
        }),
        Record::Entry(Entry {
            target: Some(b"../\xff-not-utf8".to_vec()),
            ..entry("d/link", EntryKind::Symlink, 0o777)
        }),
        Record::Entry(entry("d/pipe", EntryKind::Fifo, 0o600)),
        Record::Entry(Entry {
            rdev: Some(0x0103),
            owner: owner(0, "root"),
            ..entry("dev-null", EntryKind::CharDevice, 0o666)
        }),
        Record::Entry(Entry {
            rdev: Some(0x0800),
            ..entry("sda", EntryKind::BlockDevice, 0o660)
        }),
        Record::Entry(entry("sock", EntryKind::Socket, 0o755)),
        Record::Footer(Footer {
            entries: 8,
            bytes: 70_000,
            source_digest: "5".repeat(64),
            packs: vec![PackRecord {
                id: pack,
                size: 41_000,
            }],
            tables: vec![TableRows {
                name: "public.orders".into(),
                rows: 42,
            }],
        }),
    ]
}

/// A format 2 manifest as this build seals it: it must read back, record
/// for record, in every later build. The sealing is random (age), so the
/// writer's bytes are pinned one layer down, in `known_answers.rs`.
#[test]
fn a_format_2_manifest_still_reads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/manifest-format2.key")).unwrap())
            .unwrap();
    let sealed = std::fs::read(format!("{dir}/manifest-format2.age")).unwrap();
    // Pinned: a fixture written again would read, and prove nothing old.
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&sealed)),
        "32c0b530e2052fee5324f5ab7a879029c5daf2b464fd63796e432ef9c89f09e8"
    );
    let records: Vec<Record> = open_sealed(&sealed[..], &identity.clone().into())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records, format_2_records());
}

/// Writes `manifest-format2.age` and its key when they are missing (delete
/// both by hand to write them again). The fixture must then never change.
#[test]
#[ignore = "writes the format 2 manifest fixture when missing"]
fn write_the_format_2_manifest_fixture() {
    use vaultline_format::keys::{Identity, identity_file_text};
    use vaultline_format::manifest::SealedWriter;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    if std::path::Path::new(&format!("{dir}/manifest-format2.age")).exists() {
        return;
    }
    let identity = Identity::generate();
    let mut writer = SealedWriter::new(Vec::new(), &identity.to_public()).unwrap();
    for record in format_2_records() {
        writer.write(&record).unwrap();
    }
    std::fs::write(
        format!("{dir}/manifest-format2.key"),
        identity_file_text(&identity, "vaultline test fixture: protects nothing"),
    )
    .unwrap();
    std::fs::write(
        format!("{dir}/manifest-format2.age"),
        writer.finish().unwrap(),
    )
    .unwrap();
}

/// The chunk-id key inside `key-record.json`.
const FIXTURE_CHUNK_KEY: [u8; 32] = [0x42; 32];

/// A key record as this build writes it: it must open with the KEK that
/// wrapped it and with the tenant's identity, in every later build.
#[test]
fn a_key_record_still_opens() {
    use sha2::Digest;
    use vaultline_format::key_record::KeyRecord;
    use vaultline_format::keys::Kek;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
    let bytes = std::fs::read(format!("{dir}/key-record.json")).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        "fc23f0d94f917b14e85602552553b57fe1cd02470e7989c634aaa66dc041f68b"
    );
    let record = KeyRecord::parse(&bytes).unwrap();
    assert_eq!(
        (record.format, record.tenant.as_str(), record.created),
        (1, "acme", 1_764_936_000)
    );
    let kek = Kek::parse(&read("key-record.kek")).unwrap();
    assert_eq!(record.kek_id, kek.id());
    let opened = record.open_with_kek(&kek).unwrap();
    assert_eq!(*opened.chunk_key, FIXTURE_CHUNK_KEY);
    let identity = parse_identity(&read("key-record.identity")).unwrap();
    assert!(record.is_for(&identity));
    assert_eq!(
        *record.open_with_identity(&identity).unwrap().chunk_key,
        FIXTURE_CHUNK_KEY
    );
}

/// Writes the key record fixture and its two keys when missing.
#[test]
#[ignore = "writes the key record fixture when missing"]
fn write_the_key_record_fixture() {
    use vaultline_format::key_record::KeyRecord;
    use vaultline_format::keys::{Identity, identity_file_text};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    if std::path::Path::new(&format!("{dir}/key-record.json")).exists() {
        return;
    }
    let (kek, kek_text) = vaultline_format::keys::Kek::generate();
    let identity = Identity::generate();
    let tenant = vaultline_types::Name::new("acme").unwrap();
    let record = KeyRecord::new(&kek, &tenant, &identity, &FIXTURE_CHUNK_KEY, 1_764_936_000);
    std::fs::write(format!("{dir}/key-record.kek"), kek_text).unwrap();
    std::fs::write(
        format!("{dir}/key-record.identity"),
        identity_file_text(&identity, "vaultline test fixture: protects nothing"),
    )
    .unwrap();
    std::fs::write(format!("{dir}/key-record.json"), record.to_bytes()).unwrap();
}
