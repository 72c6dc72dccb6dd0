//! `qvault stats`: repository size, ratios, per-backup sizes, and what prune would free.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use common::human_bytes;

pub async fn run(global: &GlobalArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let s = qvault::stats::stats(&repo).await?;
    if global.json {
        return common::print_json(&s);
    }
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}×"));
    println!(
        "repository      {} ({} packs: {})",
        human_bytes(s.repository_bytes),
        s.packs,
        human_bytes(s.pack_bytes)
    );
    println!("backups         {} holding {}", s.backups, human_bytes(s.original_bytes));
    println!(
        "unique chunks   {}: {} raw, {} stored",
        s.unique_chunks,
        human_bytes(s.unique_raw_bytes),
        human_bytes(s.unique_blob_bytes)
    );
    println!("dedup ratio     {}", ratio(s.dedup_ratio));
    println!("compression     {}", ratio(s.compression_ratio));
    println!(
        "unused          {} waiting for prune ({} already marked)",
        human_bytes(s.unused_bytes),
        human_bytes(s.marked_bytes)
    );
    for b in &s.per_backup {
        println!(
            "  {:<8}  {}  {:<20} {:>10}  added {}",
            b.id.short(),
            b.time,
            b.name.as_deref().unwrap_or("-"),
            human_bytes(b.bytes),
            human_bytes(b.added_bytes)
        );
    }
    Ok(())
}
