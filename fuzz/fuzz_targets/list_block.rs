//! `decode_block` on arbitrary bytes: an error, never a panic; what decodes re-encodes to
//! the same bytes. The first byte picks the mode: odd, the rest (as 32-byte ids) is cut into
//! a tree with `list::build`, and every block must decode to its level and ids.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use qvault::format::list::{self, decode_block, encode_block};
use qvault::id::ChunkId;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok((level, ids)) = decode_block(rest, "fuzz") {
            assert_eq!(encode_block(level, &ids), rest);
        }
        return;
    }
    let ids: Vec<ChunkId> = rest
        .chunks_exact(32)
        .map(|c| ChunkId(c.try_into().expect("32 bytes")))
        .collect();
    // Any deterministic name will do: the checks never look blocks up by id.
    let name = |b: &[u8]| {
        let mut id = [0u8; 32];
        for (i, x) in b.iter().enumerate() {
            id[i % 32] = id[i % 32].rotate_left(3) ^ x;
        }
        ChunkId(id)
    };
    let (top, blocks) = list::build(&ids, name);
    assert_eq!(top.chunks, ids.len() as u64);
    assert!(top.top.len() <= list::TOP_MAX);
    for (_, bytes) in &blocks {
        let (level, ids) = decode_block(bytes, "fuzz").expect("a built block decodes");
        assert!(level >= 1 && level <= top.levels && !ids.is_empty());
    }
});
