//! Choosing an object store from a URL: `file:///abs/path`, `memory://`, `s3://bucket/prefix`.
//!
//! All retries happen in [`ObjectStorage`](crate::ObjectStorage) (one policy, one deadline,
//! and it knows whether a create-only PUT is on its first attempt), so object_store's own
//! HTTP retries are turned off for S3. Its per-request and connect timeouts stay on.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

use crate::error::{Operation, StorageError};
use crate::store::ObjectStorage;

const ACCEPTED: &str = "file:///absolute/path, memory://, s3://bucket[/prefix]";

/// HTTP request timeout for S3: bounds one request including the body of an 8 MiB PUT on a
/// slow link. [`RetryPolicy::attempt_timeout`](crate::RetryPolicy) bounds it again above.
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where objects live.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `file:///abs/path` (created if missing; development and single-node), `memory://`
    /// (tests; lost on exit) or `s3://bucket/prefix` (AWS S3 or any S3-compatible store).
    pub url: String,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO. Default: `AWS_ENDPOINT` from the
    /// environment, else AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub s3_region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which MinIO and most S3-compatible stores
    /// need. Default: `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` from the environment, else path-style
    /// with an explicit endpoint and virtual-hosted style on AWS.
    pub s3_path_style: Option<bool>,
    /// Allow plain `http://` endpoints. Default: `AWS_ALLOW_HTTP`, else true when the endpoint
    /// is an explicit `http://` URL, else false.
    pub s3_allow_http: Option<bool>,
}

impl StorageConfig {
    pub fn from_url(url: impl Into<String>) -> Self {
        StorageConfig { url: url.into(), ..StorageConfig::default() }
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> StorageError {
    StorageError::invalid(Operation::Open, url, reason)
}

/// Opens the object store named by `cfg.url`. Does no I/O except creating a `file://`
/// directory; call [`ObjectStorage::check`] to verify the store is reachable.
pub fn open(cfg: &StorageConfig) -> Result<ObjectStorage, StorageError> {
    let raw = cfg.url.trim();
    if raw.is_empty() {
        return Err(invalid(raw, format!("empty storage URL; expected one of {ACCEPTED}")));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(raw, format!("not a URL ({e}); expected one of {ACCEPTED}")))?;
    let has_s3_options = cfg.s3_endpoint.is_some()
        || cfg.s3_region.is_some()
        || cfg.s3_path_style.is_some()
        || cfg.s3_allow_http.is_some();
    if has_s3_options && url.scheme() != "s3" {
        return Err(invalid(raw, "s3_* options are set but the URL is not s3://"));
    }
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(invalid(raw, "file URLs must be file:///absolute/path (no host)"));
            }
            let dir = url.to_file_path().map_err(|()| invalid(raw, "file URLs must be file:///absolute/path"))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| invalid(raw, format!("cannot create directory {}: {e}", dir.display())))?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| invalid(raw, format!("cannot use directory {}: {e}", dir.display())))?;
            Ok(ObjectStorage::new(Arc::new(store), ""))
        }
        "memory" => {
            let prefix = url.path().trim_matches('/');
            Ok(ObjectStorage::new(Arc::new(InMemory::new()), prefix))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid(raw, "s3 URLs must name a bucket: s3://bucket[/prefix]"))?;
            let prefix = url.path().trim_matches('/').to_string();
            let store = s3(cfg, bucket).map_err(|e| invalid(raw, e.to_string()))?;
            Ok(ObjectStorage::new(store, &prefix))
        }
        other => Err(invalid(raw, format!("unsupported scheme '{other}'; expected one of {ACCEPTED}"))),
    }
}

fn s3(cfg: &StorageConfig, bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    // Environment first (credentials, AWS_ENDPOINT, AWS_REGION, AWS_ALLOW_HTTP, ...), then our
    // defaults for keys the environment did not set, then explicit config.
    let env_has = |name: &str| std::env::var_os(name).is_some();
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(RetryConfig {
        max_retries: 0,
        retry_timeout: S3_REQUEST_TIMEOUT,
        ..RetryConfig::default()
    });
    if !env_has("AWS_TIMEOUT") {
        b = b.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            format!("{}s", S3_REQUEST_TIMEOUT.as_secs()),
        );
    }
    if !env_has("AWS_CONNECT_TIMEOUT") {
        b = b.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            format!("{}s", S3_CONNECT_TIMEOUT.as_secs()),
        );
    }
    let endpoint = cfg.s3_endpoint.clone().or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if let Some(endpoint) = &cfg.s3_endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &cfg.s3_region {
        b = b.with_region(region);
    }
    let path_style = match cfg.s3_path_style {
        Some(p) => Some(p),
        // S3-compatible stores behind a custom endpoint almost always want path-style.
        None if !env_has("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") && endpoint.is_some() => Some(true),
        None => None,
    };
    if let Some(path_style) = path_style {
        b = b.with_virtual_hosted_style_request(!path_style);
    }
    let allow_http = match cfg.s3_allow_http {
        Some(allow) => Some(allow),
        // An explicit `http://` endpoint is an explicit choice of plain HTTP (local MinIO);
        // without this object_store refuses it with a bare "URL scheme is not allowed".
        None if !env_has("AWS_ALLOW_HTTP")
            && endpoint.as_deref().is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("http://")) =>
        {
            Some(true)
        }
        None => None,
    };
    if let Some(allow_http) = allow_http {
        b = b.with_allow_http(allow_http);
    }
    #[cfg(feature = "aws-profile")]
    if let Some(provider) = crate::aws_profile::provider_from_env() {
        tracing::info!(
            profile = provider.profile_name().unwrap_or("default"),
            "S3 credentials: AWS profile through the AWS SDK chain (aws-profile feature)"
        );
        b = b.with_credentials(Arc::new(provider));
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use bytes::Bytes;

    #[tokio::test]
    async fn opens_file_and_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("not/yet/there");
        let url = format!("file://{}", root.display());
        let storage = open(&StorageConfig::from_url(&url)).expect("open file");
        assert!(root.is_dir());
        storage.check().await.expect("check");
        let key = storage.wal_key(1, "inc", 0);
        storage.put_new(&key, Bytes::from_static(b"abc")).await.expect("put");
        assert!(root.join("wal/1").is_dir());

        let mem = open(&StorageConfig::from_url("memory://")).expect("open memory");
        assert_eq!(mem.prefix(), "");
        mem.check().await.expect("check");
        let mem = open(&StorageConfig::from_url("memory:///some/prefix")).expect("open memory");
        assert_eq!(mem.wal_key(2, "x", 5), "some/prefix/wal/2/x-00000000000000000005");
    }

    #[test]
    fn opens_s3_without_io() {
        let cfg = StorageConfig {
            url: "s3://bucket/a/b/".into(),
            s3_endpoint: Some("http://127.0.0.1:9".into()),
            s3_region: Some("us-east-1".into()),
            s3_path_style: Some(true),
            s3_allow_http: Some(true),
        };
        let storage = open(&cfg).expect("open s3");
        assert_eq!(storage.prefix(), "a/b");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in ["", "nope", "ftp://x/y", "s3:///prefix", "file://host/path"] {
            let e = open(&StorageConfig::from_url(url)).expect_err(url);
            assert_eq!(e.kind(), ErrorKind::Invalid, "{url}");
            let msg = e.to_string();
            assert!(msg.contains("file:///") || msg.contains("s3://"), "{url}: {msg}");
        }
        let cfg = StorageConfig { s3_region: Some("x".into()), ..StorageConfig::from_url("memory://") };
        assert_eq!(open(&cfg).expect_err("s3 opts").kind(), ErrorKind::Invalid);
    }
}
