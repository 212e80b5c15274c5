//! What a catalog rebuild costs: 10,000 packs of 64 chunks each (the
//! chunk count of a real 16 MiB pack; the blobs are small, since the
//! rebuild reads only headers and indexes) and ten manifests of 1,000 packs
//! each, on Garage. Run by hand: `cargo nextest run -p
//! vaultline-integration --run-ignored only -E 'test(rebuild_of)'`.

use crate::harness::{Env, binary, mixed_bytes};
use anyhow::{Context, Result};
use futures::StreamExt;
use vaultline_format::blob::Compressor;
use vaultline_format::manifest::{
    ChunkRef, ContentHash, Entry, EntryKind, Footer, Header, Location, PackRecord, Record,
    SealedWriter,
};
use vaultline_format::pack::PackWriter;
use vaultline_storage::ObjectKey;
use vaultline_types::{ChunkId, FilesSource, Name, PackId, SnapshotId, SourceConfig};

const PACKS: usize = 10_000;
const CHUNKS_PER_PACK: usize = 64;
const SNAPSHOTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: writes 10,000 packs to Garage"]
async fn measure_the_rebuild_of_10_000_packs() -> Result<()> {
    let env = Env::with_s3().await?;
    env.cli(&["tenant", "create", "acme"]).await?;
    let key_file = env.export_identity("acme").await?;
    let identity = vaultline_format::keys::parse_identity(&std::fs::read_to_string(&key_file)?)?;
    let recipient = identity.to_public();
    let key_id = vaultline_format::keys::key_id(&recipient.to_string());
    let tenant = Name::new("acme")?;
    let repo = vaultline_runtime::deps::open_repository(&env.config().repository, None).await?;

    let written = std::time::Instant::now();
    let packs: Vec<(PackId, u64, Vec<ChunkRef>)> = futures::stream::iter(0..PACKS)
        .map(|n| {
            let (repo, tenant, recipient) = (&repo, &tenant, &recipient);
            async move {
                let mut compressor = Compressor::new(3)?;
                let mut writer = PackWriter::new(Vec::new(), recipient)?;
                for c in 0..CHUNKS_PER_PACK {
                    let seed = (n * CHUNKS_PER_PACK + c) as u64;
                    let id = ChunkId(vaultline_format::sha256(&seed.to_le_bytes()));
                    writer.add(id, &mixed_bytes(256, seed), &mut compressor)?;
                }
                let pack = writer.finish(&mut compressor)?;
                repo.put_new_bytes(&ObjectKey::pack(tenant, &pack.id), &pack.out)
                    .await?;
                let chunks = pack
                    .entries
                    .iter()
                    .map(|e| ChunkRef {
                        id: e.id,
                        raw_length: e.raw_length,
                        location: Some(Location {
                            pack: pack.id,
                            offset: e.offset,
                            length: e.length,
                        }),
                    })
                    .collect();
                Ok::<_, anyhow::Error>((pack.id, pack.size, chunks))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let now = time::OffsetDateTime::now_utc();
    for (s, group) in packs.chunks(PACKS / SNAPSHOTS).enumerate() {
        let snapshot = SnapshotId::derive(now + time::Duration::seconds(s as i64), &format!("{s}"));
        let mut writer = SealedWriter::new(Vec::new(), &recipient)?;
        writer.write(&Record::Header(Header {
            format: 2,
            tenant: tenant.clone(),
            source: Name::new("bulk")?,
            snapshot: snapshot.clone(),
            source_kind: "files".into(),
            created: now.unix_timestamp() + s as i64,
            key_id: key_id.clone(),
            content_hash: ContentHash::Blake3,
            source_config: Some(SourceConfig::Files(FilesSource {
                path: "/bulk".into(),
            })),
        }))?;
        for (p, (_, _, chunks)) in group.iter().enumerate() {
            writer.write(&Record::Entry(Entry {
                path: format!("file-{p}").into_bytes(),
                kind: EntryKind::File,
                mode: 0o644,
                size: chunks.iter().map(|c| u64::from(c.raw_length)).sum(),
                chunks: chunks.clone(),
                ..Default::default()
            }))?;
        }
        writer.write(&Record::Footer(Footer {
            entries: group.len() as u64,
            bytes: 0,
            source_digest: String::new(),
            packs: group
                .iter()
                .map(|(id, size, _)| PackRecord {
                    id: *id,
                    size: *size,
                })
                .collect(),
            tables: vec![],
        }))?;
        repo.put_new_bytes(&ObjectKey::manifest(&tenant, &snapshot), &writer.finish()?)
            .await?;
    }
    eprintln!(
        "wrote {PACKS} packs and {SNAPSHOTS} manifests in {:?}",
        written.elapsed()
    );

    env._pg
        .psql("template1", "DROP DATABASE postgres WITH (FORCE)")?;
    env._pg.psql("template1", "CREATE DATABASE postgres")?;
    let out = tokio::process::Command::new("/usr/bin/time")
        .args(["-f", "%e s wall, %U s user, %S s system, %M KiB peak RSS"])
        .arg(binary("vaultline")?)
        .arg("--config")
        .arg(&env.config_file)
        .args(["catalog", "rebuild", "--json"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["packs"], PACKS);
    assert_eq!(report["chunks"], PACKS * CHUNKS_PER_PACK);
    assert_eq!(report["snapshots"], SNAPSHOTS);
    assert_eq!(report["snapshots_corrupt"], serde_json::json!([]));
    let measured = stderr.lines().last().context("time.s line")?;
    eprintln!("catalog rebuild of {PACKS} packs: {measured}");
    Ok(())
}
