//! Interim plain-CDC chunker with the agreed API; replaced by the tar-aware chunker.
use crate::error::{Error, Result};
use bytes::Bytes;
use std::io::Read;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    pub seed: u64,
    pub tar_aware: bool,
    pub tar_threshold: u64,
}
impl ChunkerParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return Err(Error::invalid_input("chunker sizes"));
        }
        Ok(())
    }
}
pub struct Chunker<R: Read> {
    inner: fastcdc::v2020::StreamCDC<R>,
}
impl<R: Read> Chunker<R> {
    pub fn new(reader: R, p: &ChunkerParams) -> Result<Self> {
        Ok(Chunker {
            inner: fastcdc::v2020::StreamCDC::with_level_and_seed(
                reader,
                p.min_size as usize,
                p.avg_size as usize,
                p.max_size as usize,
                fastcdc::v2020::Normalization::Level1,
                p.seed,
            ),
        })
    }
}
impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Bytes>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| r.map(|c| Bytes::from(c.data)).map_err(std::io::Error::other))
    }
}
