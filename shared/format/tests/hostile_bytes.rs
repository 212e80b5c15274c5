//! Every parser of bytes that may be hostile gets arbitrary and mutated
//! input: staged batches, pack headers and indexes, blob framing, manifest
//! records. Expected: never a panic, an error for what is not valid, and
//! never more memory than the caps allow: the process's allocator refuses
//! (and so aborts the test) past [`HEADROOM`] over what was held before the
//! cases began. 10,000 cases each here; `cargo test -p vaultline-format
//! --test hostile_bytes -- --ignored` runs 1,000,000 of each.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::OnceLock;
use vaultline_format::blob::{Compressor, unframe};
use vaultline_format::keys::Identity;
use vaultline_format::manifest::{Entry, EntryKind, Record, RecordReader, write_record};
use vaultline_format::pack::{
    FRAME_BYTES, HEAD_BYTES, IndexEntry, PackWriter, check_layout, decode_index, read_index,
};
use vaultline_format::staged::{StagedReader, StagedWriter};
use vaultline_types::ChunkId;

/// Counts every byte this test process holds, and refuses past a limit.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// What parsing may hold at once: the largest cap a parser has (a blob's
/// plaintext, 64 MiB) twice over, for the frame and its copy. A length read
/// from the input and trusted would ask for up to 4 GiB and fail here.
const HEADROOM: usize = 128 << 20;

/// Limits the process to what it holds now plus [`HEADROOM`], after
/// checking that the limit bites.
fn cap_allocations() {
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + HEADROOM)
        .unwrap();
    assert!(
        Vec::<u8>::new().try_reserve_exact(HEADROOM + 1).is_err(),
        "the allocation cap does not hold"
    );
}

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(Identity::generate)
}

/// A valid staged batch of three chunks, to mutate.
fn batch() -> &'static [u8] {
    static BATCH: OnceLock<Vec<u8>> = OnceLock::new();
    BATCH.get_or_init(|| {
        let mut writer = StagedWriter::new(Vec::new(), &identity().to_public()).unwrap();
        for (i, chunk) in [&b"first chunk"[..], b"", &[7u8; 300]].iter().enumerate() {
            writer.add(&ChunkId([i as u8; 32]), chunk).unwrap();
        }
        writer.finish().unwrap()
    })
}

/// A valid pack of three blobs and its index, to mutate.
fn pack() -> &'static (Vec<u8>, Vec<IndexEntry>) {
    static PACK: OnceLock<(Vec<u8>, Vec<IndexEntry>)> = OnceLock::new();
    PACK.get_or_init(|| {
        let mut compressor = Compressor::new(3).unwrap();
        let mut writer = PackWriter::new(Vec::new(), &identity().to_public()).unwrap();
        for i in 0..3u8 {
            let chunk = vec![i; 500 + usize::from(i) * 100];
            writer
                .add(ChunkId([i; 32]), &chunk, &mut compressor)
                .unwrap();
        }
        let finished = writer.finish(&mut compressor).unwrap();
        (finished.out, finished.entries)
    })
}

/// Valid manifest records, unsealed, to mutate.
fn records() -> &'static [u8] {
    static RECORDS: OnceLock<Vec<u8>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let mut bytes = Vec::new();
        for path in ["a", "a/b.txt"] {
            let entry = Entry {
                path: path.as_bytes().to_vec(),
                kind: EntryKind::File,
                mode: 0o644,
                size: 3,
                ..Entry::default()
            };
            write_record(&mut bytes, &Record::Entry(entry)).unwrap();
        }
        bytes
    })
}

/// `base` with bytes overwritten at the given positions and cut at `cut`.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, value) in edits {
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = value;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

fn read_batch(bytes: &[u8]) -> Result<usize, vaultline_format::Error> {
    let mut reader = StagedReader::open(bytes, identity())?;
    let (mut record, mut chunks) = (Vec::new(), 0);
    while reader.next_chunk(&mut record)?.is_some() {
        chunks += 1;
    }
    Ok(chunks)
}

fn read_records(bytes: &[u8]) -> usize {
    // Stops at the first error, as the restore's reader does.
    RecordReader::new(bytes).take_while(Result::is_ok).count()
}

fn check_layout_of(pack: &[u8], entries: &[IndexEntry]) -> bool {
    let size = pack.len() as u64;
    let head = &pack[..HEAD_BYTES.min(pack.len())];
    let tail = &pack[pack.len().saturating_sub(FRAME_BYTES)..];
    check_layout(head, tail, size, entries).is_ok()
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        prop::option::of(any::<usize>()),
    )
}

fn entries() -> impl Strategy<Value = Vec<IndexEntry>> {
    prop::collection::vec(
        (any::<[u8; 32]>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
            |(id, offset, length, raw_length)| IndexEntry {
                id: ChunkId(id),
                offset,
                length,
                raw_length,
            },
        ),
        0..6,
    )
}

/// Runs every property with `cases` cases each.
fn run_all(cases: u32) {
    cap_allocations();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let runner = || TestRunner::new(config.clone());
    let arbitrary = prop::collection::vec(any::<u8>(), 0..2048);

    runner()
        .run(&arbitrary, |bytes| {
            prop_assert!(read_batch(&bytes).is_err());
            prop_assert!(read_index(&bytes, &identity().into()).is_err());
            let _ = unframe(bytes.clone());
            let _ = decode_index(&bytes);
            let _ = read_records(&bytes);
            Ok(())
        })
        .unwrap();

    runner()
        .run(&edits(), |(edits, cut)| {
            let bytes = mutate(batch(), &edits, cut);
            // Authenticated records: either the very batch, or an error.
            match read_batch(&bytes) {
                Ok(chunks) => prop_assert!(bytes == batch() && chunks == 3),
                Err(_) => prop_assert!(bytes != batch()),
            }
            Ok(())
        })
        .unwrap();

    runner()
        .run(&(edits(), entries()), |((edits, cut), forged)| {
            let (base, index) = pack();
            let bytes = mutate(base, &edits, cut);
            if let Ok(read) = read_index(&bytes, &identity().into()) {
                prop_assert_eq!(&read, index, "a damaged pack read as another index");
            }
            let _ = check_layout_of(&bytes, &forged);
            // The genuine index fits only the genuine layout's blob region.
            if bytes.len() == base.len() && bytes[..FRAME_BYTES] == base[..FRAME_BYTES] {
                let _ = check_layout_of(&bytes, index);
            }
            Ok(())
        })
        .unwrap();

    runner()
        .run(&edits(), |(edits, cut)| {
            let bytes = mutate(records(), &edits, cut);
            let read = read_records(&bytes);
            if bytes == records() {
                prop_assert_eq!(read, 2);
            }
            Ok(())
        })
        .unwrap();

    runner()
        .run(
            &(any::<u8>(), prop::collection::vec(any::<u8>(), 0..4096)),
            |(codec, body)| {
                let mut framed = vec![codec % 3];
                framed.extend(body);
                let _ = unframe(framed);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn hostile_bytes_never_panic_10k() {
    let (base, index) = pack();
    assert!(
        check_layout_of(base, index),
        "the genuine pack passes its own check"
    );
    assert_eq!(read_batch(batch()).unwrap(), 3);
    assert_eq!(read_records(records()), 2);
    run_all(10_000);
}

/// A zstd frame that claims a terabyte of content (in 13 bytes) is refused
/// by its claim: trusting it would allocate past the cap and abort.
#[test]
fn a_frame_claiming_more_than_any_chunk_is_refused_unallocated() {
    cap_allocations();
    let mut framed = vec![1u8]; // the zstd codec
    framed.extend([0x28, 0xb5, 0x2f, 0xfd]); // zstd magic
    framed.push(0xe0); // single segment, an 8-byte content size follows
    framed.extend((1u64 << 40).to_le_bytes());
    framed.extend([0x09, 0x00, 0x00, b'x']); // last block, raw, 1 byte
    let refused = unframe(framed).unwrap_err().to_string();
    assert!(
        refused.contains("a frame of 1099511627776 bytes"),
        "{refused}"
    );
}

#[test]
#[ignore = "a million cases per parser: minutes; run by hand after a parser changes"]
fn hostile_bytes_never_panic_1m() {
    run_all(1_000_000);
}
