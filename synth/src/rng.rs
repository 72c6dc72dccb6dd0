//! Deterministic, allocation-free randomness for the generator.
//!
//! Everything the series contains is a pure function of the seed and of small keys (point id,
//! point version, segment uuid, slot). That is what lets the writer stream: a vector is
//! regenerated from `(seed, id, version)` whenever it is written, never stored.

/// wyrand: one 64x64->128 multiply per output, good enough statistically and fast in debug
/// builds too (tests generate a few MB per case).
#[derive(Clone, Debug)]
pub(crate) struct WyRand(u64);

impl WyRand {
    pub(crate) fn new(seed: u64) -> Self {
        WyRand(seed)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (0 when `n == 0`), by multiply-shift: no modulo bias worth caring
    /// about for a generator.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// splitmix64-style finaliser used to derive independent streams from keys.
#[inline]
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stream tags so that vectors, payloads, links, ... of the same key never share a stream.
pub(crate) const TAG_VECTOR: u64 = 0x7665_6374;
pub(crate) const TAG_PAYLOAD: u64 = 0x7061_796c;
pub(crate) const TAG_LINKS: u64 = 0x6c69_6e6b;
pub(crate) const TAG_UUID: u64 = 0x7575_6964;
pub(crate) const TAG_SIM: u64 = 0x7369_6d75;
pub(crate) const TAG_WAL: u64 = 0x7761_6c00;

/// Fills `out` with a unit-length vector for `(id, version)`.
///
/// Each component is the sum of four 16-bit uniforms (Irwin-Hall), a cheap near-Gaussian,
/// then the vector is L2-normalised as Qdrant stores Cosine vectors. The resulting float32
/// bytes behave like real embeddings under zstd (sign and exponent bytes partly
/// compressible, mantissas not): ratio about 0.9, neither all-zero nor trivially compressible.
pub(crate) fn fill_vector(seed: u64, id: u64, version: u32, out: &mut [f32]) {
    let mut rng = WyRand::new(mix(mix(seed ^ TAG_VECTOR, id), u64::from(version)));
    let mut sum = 0.0f32;
    for x in out.iter_mut() {
        let r = rng.next_u64();
        let g = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        let f = g as f32 - 131_070.0;
        *x = f;
        sum += f * f;
    }
    // A zero vector is astronomically unlikely; keep it as is rather than divide by zero.
    if sum > 0.0 {
        let inv = 1.0 / sum.sqrt();
        for x in out.iter_mut() {
            *x *= inv;
        }
    }
}

const WORDS: [&str; 32] = [
    "vector",
    "segment",
    "backup",
    "payload",
    "cluster",
    "shard",
    "snapshot",
    "engine",
    "search",
    "restore",
    "index",
    "storage",
    "replica",
    "query",
    "filter",
    "point",
    "collection",
    "embedding",
    "graph",
    "chunk",
    "archive",
    "stream",
    "window",
    "ocean",
    "forest",
    "river",
    "mountain",
    "signal",
    "kernel",
    "matrix",
    "tensor",
    "quantum",
];

/// Longest title: 7 words of at most 10 bytes plus 6 spaces.
pub(crate) const MAX_TITLE: usize = 7 * 10 + 6;

/// The payload of one point version: `{"title": "...", "n": id, "tag": "a"}`, the shape of the
/// real fixture's payloads. Lives on the stack.
pub(crate) struct Payload {
    pub(crate) title: [u8; MAX_TITLE],
    pub(crate) title_len: usize,
    pub(crate) n: u64,
    pub(crate) tag: u8,
}

impl Payload {
    pub(crate) fn new(seed: u64, id: u64, version: u32) -> Self {
        let mut rng = WyRand::new(mix(mix(seed ^ TAG_PAYLOAD, id), u64::from(version)));
        let words = 3 + rng.below(5) as usize;
        let mut title = [0u8; MAX_TITLE];
        let mut len = 0;
        for w in 0..words {
            if w > 0 {
                title[len] = b' ';
                len += 1;
            }
            let word = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
            title[len..len + word.len()].copy_from_slice(word);
            len += word.len();
        }
        let tag = b'a' + rng.below(4) as u8;
        Payload { title, title_len: len, n: id, tag }
    }

    pub(crate) fn title(&self) -> &[u8] {
        &self.title[..self.title_len]
    }

    /// Writes the JSON form into `out` and returns its length (at most [`MAX_JSON`]).
    pub(crate) fn write_json(&self, out: &mut [u8; MAX_JSON]) -> usize {
        let mut len = 0;
        let mut put = |b: &[u8]| {
            out[len..len + b.len()].copy_from_slice(b);
            len += b.len();
        };
        put(b"{\"title\":\"");
        put(self.title());
        put(b"\",\"n\":");
        let mut digits = [0u8; 20];
        let d = decimal(self.n, &mut digits);
        put(d);
        put(b",\"tag\":\"");
        put(&[self.tag]);
        put(b"\"}");
        len
    }
}

/// `{"title":"` + title + `","n":` + 20 digits + `,"tag":"x"}`.
pub(crate) const MAX_JSON: usize = 10 + MAX_TITLE + 6 + 20 + 11;

/// Formats `v` in decimal into the tail of `buf`, returning the digits.
pub(crate) fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A uuid (v4 layout) derived from the seed and a counter.
pub(crate) fn uuid(seed: u64, shard: u32, counter: u64) -> [u8; 16] {
    let mut rng = WyRand::new(mix(mix(seed ^ TAG_UUID, u64::from(shard)), counter));
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    u[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

pub(crate) fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// CRC-32C (Castagnoli), as the `wal` crate frames its entries. Table built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Crc32c(!0)
    }

    #[inline]
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xe306_9283);
    }

    #[test]
    fn vectors_are_unit_length_and_distinct() {
        let mut a = vec![0f32; 128];
        let mut b = vec![0f32; 128];
        fill_vector(1, 2, 3, &mut a);
        fill_vector(1, 2, 4, &mut b);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_ne!(a, b);
    }

    #[test]
    fn payload_json_fits_one_block() {
        for id in 0..2000u64 {
            let p = Payload::new(7, id * 1_000_003, 5);
            let mut buf = [0u8; MAX_JSON];
            let n = p.write_json(&mut buf);
            let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(v["n"], id * 1_000_003);
            assert!(n <= 122, "{n}");
        }
    }
}
