//! Golden bytes: a manifest written by the last build of manifest format 1
//! (commit 7793ea7, through the whole pipeline) still reads, field by field.

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
