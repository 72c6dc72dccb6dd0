//! `qvault backups` and `qvault show`.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::redact::printable;

pub async fn backups(global: &GlobalArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let backups = repo.backups()?;
    if global.json {
        return common::print_json(&backups);
    }
    println!("{:<10} {:<21} {:>11}  {:<20} tags", "id", "time", "size", "name");
    for b in &backups {
        let tags: Vec<String> = b.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<10} {:<21} {:>11}  {:<20} {}",
            b.id.short(),
            b.time,
            common::human_bytes(b.bytes),
            b.name.as_deref().unwrap_or("-"),
            tags.join(",")
        );
    }
    if common::chatty(global) {
        eprintln!("{} backups", backups.len());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Backup id (or a unique prefix, or `latest`).
    pub id: String,
}

pub async fn show(global: &GlobalArgs, args: &ShowArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let id = repo.resolve_backup(&args.id)?;
    let m = repo.read_manifest(id).await?;
    if global.json {
        let streams: Vec<_> = m
            .streams
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "kind": s.kind, "size": s.size, "sha256": s.sha256,
                    "blake3": s.blake3, "chunks": s.chunk_count(), "source": s.source,
                    "unreadable": s.unreadable,
                })
            })
            .collect();
        return common::print_json(&serde_json::json!({
            "id": id, "time": m.time, "name": m.name, "tags": m.tags, "host": m.host,
            "tool_version": m.tool_version, "bytes": m.total_size(), "summary": m.summary,
            "streams": streams,
        }));
    }
    println!("backup   {id}");
    println!("time     {}", m.time);
    println!("name     {}", m.name.as_deref().unwrap_or("-"));
    println!("host     {}", m.host);
    println!("tool     {}", m.tool_version);
    for (k, v) in &m.tags {
        println!("tag      {k}={v}");
    }
    println!(
        "summary  read {}, added {}, {} chunks ({} new), {:.1} s",
        common::human_bytes(m.summary.bytes_read),
        common::human_bytes(m.summary.bytes_added),
        m.summary.chunks,
        m.summary.new_chunks,
        m.summary.duration_ms as f64 / 1000.0
    );
    for s in &m.streams {
        println!("stream   {} ({:?})", printable(&s.name), s.kind);
        println!(
            "  size   {} ({} bytes), {} chunks",
            common::human_bytes(s.size),
            s.size,
            s.chunk_count()
        );
        println!("  sha256 {}", s.sha256);
        println!("  blake3 {}", s.blake3);
        if let Some(u) = &s.unreadable {
            println!("  INCOMPLETE: {}", qvault::report::unreadable_paths(u.count));
            for p in &u.paths {
                println!("    {}: {}", printable(&p.path), printable(&p.error));
            }
            if u.count > u.paths.len() as u64 {
                println!("    and {} more", u.count - u.paths.len() as u64);
            }
        }
    }
    for line in qvault::qdrant::cluster::backup::describe(&m.streams) {
        println!("cluster  {line}");
    }
    Ok(())
}
