//! Event payloads are hostile input: anyone allowed to publish on a subject
//! chooses the bytes. Arbitrary bytes and mutated genuine payloads, as JSON,
//! MessagePack or without a content type, must decode to an event or fail
//! with an error, never panic; a payload that decodes is then bound to its
//! subject, which must refuse another tenant's. A length claimed inside a
//! payload (a MessagePack array of four billion items) must not be trusted:
//! the process's allocator refuses past [`HEADROOM`], which aborts the test.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vaultline_types::{
    BackupRequested, CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, DataExtracted, DrillCompleted,
    Message, Name, PackStaged, PacksDeleted, SnapshotFailed, SnapshotId, decode, encode,
};

/// Decodes `payload` as `M` the way the runner does, then binds it to `subject`.
fn decode_as<M: Message>(content_type: Option<&str>, payload: &[u8], subject: &str) -> bool {
    match decode::<M>(content_type, payload) {
        Ok(mut message) => message.bind_subject(subject).is_ok(),
        Err(_) => false,
    }
}

fn every_kind(content_type: Option<&str>, payload: &[u8]) {
    let subject = "vaultline.x.acme";
    decode_as::<BackupRequested>(content_type, payload, "vaultline.backup.request.acme.docs");
    decode_as::<DataExtracted>(content_type, payload, subject);
    decode_as::<PackStaged>(content_type, payload, subject);
    decode_as::<SnapshotFailed>(content_type, payload, subject);
    decode_as::<PacksDeleted>(content_type, payload, subject);
    decode_as::<DrillCompleted>(content_type, payload, subject);
}

fn genuine() -> Vec<u8> {
    let failed = SnapshotFailed {
        tenant: Name::new("acme").unwrap(),
        source: Some(Name::new("docs").unwrap()),
        snapshot: SnapshotId::parse("20261205T120000Z-0a1b2c3d").unwrap(),
        stage: vaultline_types::StageName::Packager,
        error_type: "staging".into(),
        error: "gone".into(),
    };
    encode(&failed)
}

/// Counts every byte this test process holds, and refuses past a limit.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Payloads here are at most a few KiB; decoding one may take a little more.
const HEADROOM: usize = 16 << 20;

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

/// MessagePack arrays, maps and strings that claim four billion items or
/// bytes in five bytes: each is refused, and nothing is allocated for the
/// claim (past the cap, the test would abort).
#[test]
fn claimed_lengths_are_not_trusted() {
    cap_allocations();
    for claim in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff][..], // array 32
        &[0xdf, 0xff, 0xff, 0xff, 0xff],     // map 32
        &[0xdb, 0xff, 0xff, 0xff, 0xff],     // str 32
        &[0xc6, 0xff, 0xff, 0xff, 0xff],     // bin 32
    ] {
        for content_type in [None, Some(CONTENT_TYPE_MSGPACK)] {
            assert!(!decode_as::<PackStaged>(
                content_type,
                claim,
                "vaultline.x.acme"
            ));
            assert!(!decode_as::<DataExtracted>(
                content_type,
                claim,
                "vaultline.x.acme"
            ));
        }
    }
}

fn run_all(cases: u32) {
    cap_allocations();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let types = [None, Some(CONTENT_TYPE_JSON), Some(CONTENT_TYPE_MSGPACK)];
    TestRunner::new(config.clone())
        .run(&prop::collection::vec(any::<u8>(), 0..1024), |payload| {
            for content_type in types {
                every_kind(content_type, &payload);
            }
            Ok(())
        })
        .unwrap();
    let base = genuine();
    TestRunner::new(config)
        .run(
            &prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            |edits| {
                let mut payload = base.clone();
                for (at, value) in edits {
                    let at = at % payload.len();
                    payload[at] = value;
                }
                every_kind(Some(CONTENT_TYPE_MSGPACK), &payload);
                // Whatever it decodes to, it belongs to no other tenant's subject.
                prop_assert!(
                    !decode_as::<SnapshotFailed>(
                        Some(CONTENT_TYPE_MSGPACK),
                        &payload,
                        "vaultline.snapshot.failed.other"
                    ) || payload.windows(5).any(|w| w == b"other")
                );
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn hostile_payloads_never_panic_10k() {
    let base = genuine();
    assert!(decode_as::<SnapshotFailed>(
        Some(CONTENT_TYPE_MSGPACK),
        &base,
        "vaultline.snapshot.failed.acme"
    ));
    assert!(!decode_as::<SnapshotFailed>(
        Some(CONTENT_TYPE_MSGPACK),
        &base,
        "vaultline.snapshot.failed.other"
    ));
    run_all(10_000);
}

#[test]
#[ignore = "a million cases: minutes; run by hand after a decoder changes"]
fn hostile_payloads_never_panic_1m() {
    run_all(1_000_000);
}
