//! Golden bytes: a manifest written by the last build of manifest format 1
//! (commit 7793ea7, through the whole pipeline) still reads, field by field,
//! and a format 2 pack (written by e5193b5's copy-free pack writer, whose
//! layout is the one format 2 always had) still reads blob by blob.

use vaultline_format::keys::parse_identity;
use vaultline_format::manifest::{ContentHash, EntryKind, Record, open_sealed};

#[test]
fn a_format_1_manifest_still_reads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/manifest-format1.key")).unwrap())
            .unwrap();
    let sealed = std::fs::read(format!("{dir}/manifest-format1.age")).unwrap();
    let records: Vec<Record> = open_sealed(&sealed[..], &identity)
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

/// A format 2 pack as this build writes it (`nonce | sealed frame | tag`
/// per blob, the sealed index, its length, the end magic): it must read,
/// blob by blob, in every later build.
#[test]
fn a_format_2_pack_still_reads() {
    use sha2::Digest;
    use vaultline_format::pack::{FRAME_BYTES, Header, PackKey, check_layout, read_index};
    use vaultline_types::ChunkId;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let identity =
        parse_identity(&std::fs::read_to_string(format!("{dir}/pack-format2.key")).unwrap())
            .unwrap();
    let pack = std::fs::read(format!("{dir}/pack-format2")).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&pack)),
        "5222aac9b77ef4c81640fc08bb0a384520834f0ee47d83b2996ceb92c029d2fb"
    );
    let index = read_index(&pack, &identity).unwrap();
    let listed: Vec<(ChunkId, u32)> = index.iter().map(|e| (e.id, e.raw_length)).collect();
    assert_eq!(
        listed,
        [
            (ChunkId([1; 32]), 19 * 200),
            (ChunkId([2; 32]), 70_000),
            (ChunkId([3; 32]), 0)
        ]
    );
    let tail = &pack[pack.len() - FRAME_BYTES..];
    check_layout(&pack[..FRAME_BYTES], tail, pack.len() as u64, &index).unwrap();
    let Header::Key(key, _) = PackKey::read(&pack, &std::sync::Arc::new(identity)).unwrap() else {
        panic!("the whole pack holds its header")
    };
    let random: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expected = [b"compressible text, ".repeat(200), random, Vec::new()];
    for (entry, plain) in index.iter().zip(expected) {
        let at = entry.offset as usize;
        let sealed = &pack[at..at + entry.length as usize];
        assert_eq!(key.open(&entry.id, sealed).unwrap(), plain);
    }
}
