//! Interim storage over OpenDAL (fs and memory only); replaced by the full module.
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use opendal::{services, Operator};

#[derive(Clone, Default, Debug)]
pub struct StorageOptions {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
}

#[derive(Clone)]
pub struct Storage {
    op: Operator,
    location: String,
}

pub struct ObjectInfo {
    pub path: String,
    pub size: u64,
}

fn map(location: &str, path: &str, e: opendal::Error) -> Error {
    let kind = if e.kind() == opendal::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Storage };
    Error::new(kind, format!("{location}/{path}: {e}"))
}

impl Storage {
    pub fn open(location: &str, _options: &StorageOptions) -> Result<Storage> {
        let op = Operator::new(services::Fs::default().root(location))
            .map_err(|e| Error::new(ErrorKind::Storage, e.to_string()))?;
        Ok(Storage { op, location: location.to_string() })
    }
    pub fn memory() -> Storage {
        let op = Operator::new(services::Memory::default());
        #[allow(clippy::expect_used)]
        let op = op.expect("memory");
        Storage { op, location: "memory".into() }
    }
    pub fn location(&self) -> &str {
        &self.location
    }
    pub async fn read(&self, path: &str) -> Result<Bytes> {
        Ok(self.op.read(path).await.map_err(|e| map(&self.location, path, e))?.to_bytes())
    }
    pub async fn read_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.op.read_with(path).range(range).await.map_err(|e| map(&self.location, path, e))?.to_bytes())
    }
    pub async fn write(&self, path: &str, data: Bytes) -> Result<()> {
        self.op.write(path, data).await.map_err(|e| map(&self.location, path, e))?;
        Ok(())
    }
    pub async fn write_new(&self, path: &str, data: Bytes) -> Result<()> {
        if self.exists(path).await? {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{} exists", path)));
        }
        self.write(path, data).await
    }
    pub async fn exists(&self, path: &str) -> Result<bool> {
        self.op.exists(path).await.map_err(|e| map(&self.location, path, e))
    }
    pub async fn size(&self, path: &str) -> Result<u64> {
        Ok(self.op.stat(path).await.map_err(|e| map(&self.location, path, e))?.content_length())
    }
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(map(&self.location, dir, e)),
        };
        let mut out: Vec<ObjectInfo> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| ObjectInfo { path: e.path().to_string(), size: e.metadata().content_length() })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.op.delete(path).await.map_err(|e| map(&self.location, path, e))
    }
}
