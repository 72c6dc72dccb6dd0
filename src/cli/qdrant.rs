//! Qdrant connection flags shared by `backup`, `restore` and `qdrant`, and the `qdrant` verb.

use anyhow::Result;
use clap::Args;
use qvault::qdrant::{QdrantClient, QdrantOptions};
use std::path::PathBuf;

/// How to reach a Qdrant node.
#[derive(Args, Debug, Clone, Default)]
pub struct QdrantConnArgs {
    /// Qdrant REST URL, e.g. http://localhost:6333.
    #[arg(long, value_name = "URL")]
    pub qdrant: Option<String>,
    /// Qdrant API key (sent as the `api-key` header; see --bearer).
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Send the key as `Authorization: Bearer …` (a JWT) instead.
    #[arg(long)]
    pub bearer: bool,
    /// PEM file with the CA certificate of a private TLS setup.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl QdrantConnArgs {
    /// The client for `--qdrant`, or `None` when no URL was given.
    pub fn client(&self) -> Result<Option<QdrantClient>> {
        let Some(url) = &self.qdrant else { return Ok(None) };
        let mut options = QdrantOptions::new(url.clone());
        options.api_key = self.api_key.clone().filter(|k| !k.is_empty());
        options.bearer = self.bearer;
        options.ca_cert = self.ca_cert.clone();
        Ok(Some(QdrantClient::new(options)?))
    }

    pub fn require_client(&self, what: &str) -> Result<QdrantClient> {
        self.client()?.ok_or_else(|| {
            qvault::Error::invalid_input(format!("{what} needs --qdrant URL")).into()
        })
    }
}
