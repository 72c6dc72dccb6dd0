//! How each backend's OpenDAL operator is built from a parsed location and the options:
//! endpoint, region and credentials from the options first, then the environment. Backends
//! behind a cargo feature return an error naming the feature when it is off.

use opendal::Operator;

use super::StorageOptions;
use crate::error::{Error, Result};

/// S3: endpoint, region and credentials from options, then the environment.
pub(super) fn s3(
    display: &str,
    bucket: &str,
    prefix: &str,
    options: &StorageOptions,
) -> Result<(Operator, String)> {
    let region = options.s3_region.clone().or_else(|| env("AWS_REGION")).unwrap_or_else(|| {
        // S3-compatible servers ignore the region but signatures need one.
        "us-east-1".to_string()
    });
    let endpoint = options.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
    let mut builder = opendal::services::S3::default()
        .bucket(bucket)
        .root(prefix)
        .region(&region)
        // Never query the EC2 instance metadata service: off EC2 it only adds a long
        // timeout before a "no credentials" error.
        .disable_ec2_metadata();
    if let Some(ep) = &endpoint {
        builder = builder.endpoint(ep.trim_end_matches('/'));
    }
    let key = options.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret = options.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    if let (Some(key), Some(secret)) = (&key, &secret) {
        builder = builder.access_key_id(key).secret_access_key(secret);
    }
    let op = Operator::new(builder).map_err(|e| config_err(display, "S3", e))?;
    let shown = endpoint
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    Ok((op, shown))
}

#[allow(dead_code)]
fn not_built(display: &str, what: &str, feature: &str) -> Error {
    Error::invalid_input(format!(
        "repository location {display}: {what} support is not in this build; rebuild \
         qvault with `cargo install qvault --features {feature}`"
    ))
}

fn config_err(display: &str, what: &str, e: opendal::Error) -> Error {
    Error::invalid_input(format!("cannot configure {what} for {display}: {}", e.message()))
        .with_source(e)
}

/// A variable from the environment; set but empty counts as unset.
fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

#[cfg(feature = "azure")]
pub(super) fn azblob(
    display: &str,
    container: &str,
    prefix: &str,
    options: &StorageOptions,
) -> Result<(Operator, String)> {
    // Not the S3 fields: a host with AWS credentials in its environment must not send
    // them to Azure as an account name and key.
    let account = options.azure_account.clone().or_else(|| env("AZURE_STORAGE_ACCOUNT"));
    let key = options.azure_key.clone().or_else(|| env("AZURE_STORAGE_KEY"));
    let endpoint = (options.azure_endpoint.clone())
        .or_else(|| env("AZURE_STORAGE_ENDPOINT"))
        .map(|e| e.trim_end_matches('/').to_string())
        .or_else(|| account.as_ref().map(|a| format!("https://{a}.blob.core.windows.net")));
    let Some(endpoint) = endpoint else {
        return Err(Error::invalid_input(format!(
            "repository location {display}: set AZURE_STORAGE_ACCOUNT (and \
             AZURE_STORAGE_KEY), or give the endpoint with --azure-endpoint"
        )));
    };
    let mut b =
        opendal::services::Azblob::default().container(container).root(prefix).endpoint(&endpoint);
    if let Some(a) = &account {
        b = b.account_name(a);
    }
    if let Some(k) = &key {
        b = b.account_key(k);
    }
    let op = Operator::new(b).map_err(|e| config_err(display, "Azure Blob Storage", e))?;
    Ok((op, endpoint))
}

#[cfg(not(feature = "azure"))]
pub(super) fn azblob(
    display: &str,
    _: &str,
    _: &str,
    _: &StorageOptions,
) -> Result<(Operator, String)> {
    Err(not_built(display, "Azure Blob Storage", "azure"))
}

#[cfg(feature = "gcs")]
pub(super) fn gcs(
    display: &str,
    bucket: &str,
    prefix: &str,
    options: &StorageOptions,
) -> Result<(Operator, String)> {
    let mut b = opendal::services::Gcs::default().bucket(bucket).root(prefix);
    let credentials =
        options.gcs_credential_file.clone().or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS"));
    if let Some(path) = credentials {
        b = b.credential_path(&path);
    }
    let op = Operator::new(b).map_err(|e| config_err(display, "Google Cloud Storage", e))?;
    Ok((op, "https://storage.googleapis.com".to_string()))
}

#[cfg(not(feature = "gcs"))]
pub(super) fn gcs(
    display: &str,
    _: &str,
    _: &str,
    _: &StorageOptions,
) -> Result<(Operator, String)> {
    Err(not_built(display, "Google Cloud Storage", "gcs"))
}

#[cfg(feature = "webdav")]
pub(super) fn webdav(
    display: &str,
    endpoint: &str,
    root: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<Operator> {
    let mut b = opendal::services::Webdav::default().endpoint(endpoint).root(root);
    if let Some(u) = user {
        b = b.username(u);
    }
    if let Some(p) = password {
        b = b.password(p);
    }
    Operator::new(b).map_err(|e| config_err(display, "WebDAV", e))
}

#[cfg(not(feature = "webdav"))]
pub(super) fn webdav(
    display: &str,
    _: &str,
    _: &str,
    _: Option<&str>,
    _: Option<&str>,
) -> Result<Operator> {
    Err(not_built(display, "WebDAV", "webdav"))
}

#[cfg(feature = "sftp")]
pub(super) fn sftp(
    display: &str,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    root: &str,
) -> Result<(Operator, String)> {
    let endpoint = match port {
        Some(p) => format!("ssh://{host}:{p}"),
        None => format!("ssh://{host}"),
    };
    let mut b = opendal::services::Sftp::default().endpoint(&endpoint).root(root);
    if let Some(u) = user {
        b = b.user(u);
    }
    let op = Operator::new(b).map_err(|e| config_err(display, "SFTP", e))?;
    Ok((op, endpoint))
}

#[cfg(not(feature = "sftp"))]
pub(super) fn sftp(
    display: &str,
    _: Option<&str>,
    _: &str,
    _: Option<u16>,
    _: &str,
) -> Result<(Operator, String)> {
    Err(not_built(display, "SFTP", "sftp"))
}
