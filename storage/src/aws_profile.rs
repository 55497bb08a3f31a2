//! S3 credentials from AWS profiles and SSO (`AWS_PROFILE`, `~/.aws/config`,
//! `~/.aws/credentials`), through the AWS SDK's credential chain. Compiled only with the
//! `aws-profile` cargo feature (it pulls in `aws-config`).
//!
//! Which source wins (see `docs/configuration.md`):
//! 1. `AWS_ACCESS_KEY_ID` (+ secret, + session token) in the environment: object_store's own
//!    static credentials; this module is not used.
//! 2. Otherwise, when a profile is configured (`AWS_PROFILE` is set, or a shared config or
//!    credentials file exists: `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`, default
//!    `~/.aws/config` / `~/.aws/credentials`): the AWS SDK's default chain with that profile:
//!    profile (static keys, `source_profile` + `role_arn`, `credential_process`, SSO via
//!    `sso_session` / `sso_start_url` with the token cached by `aws sso login`), then web
//!    identity, ECS and instance metadata, as the AWS CLI does.
//! 3. Otherwise object_store's chain (web identity, ECS task role, EC2 instance metadata).
//!
//! Credentials are cached until [`REFRESH_BEFORE_EXPIRY`] before they expire (static ones
//! forever). If a refresh fails while the cached credentials are still valid, those are used
//! and the failure is logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;

/// Credentials are refreshed this long before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Whether the environment selects the AWS profile chain (rule 2 above), read through `var`.
pub fn profile_selected(var: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if set("AWS_ACCESS_KEY_ID") {
        return false;
    }
    if set("AWS_PROFILE") {
        return true;
    }
    let home = var("HOME").filter(|h| !h.is_empty());
    let file = |env: &str, default: &str| {
        var(env)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| std::path::Path::new(h).join(".aws").join(default)))
    };
    [file("AWS_CONFIG_FILE", "config"), file("AWS_SHARED_CREDENTIALS_FILE", "credentials")]
        .into_iter()
        .flatten()
        .any(|p| p.is_file())
}

/// The profile credential provider if the process environment selects it.
pub fn provider_from_env() -> Option<ProfileCredentialProvider> {
    let var = |name: &str| std::env::var(name).ok();
    profile_selected(&var).then(|| ProfileCredentialProvider::lazy(var("AWS_PROFILE").filter(|p| !p.is_empty())))
}

enum Source {
    /// Built on first use (building reads the profile files and needs a runtime).
    Lazy {
        profile: Option<String>,
        chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    },
    Fixed(SharedCredentialsProvider),
}

struct Cached {
    credential: Arc<AwsCredential>,
    expiry: Option<SystemTime>,
}

/// An object_store [`CredentialProvider`] backed by an AWS SDK credentials provider, with
/// caching until shortly before expiry.
pub struct ProfileCredentialProvider {
    source: Source,
    cached: tokio::sync::Mutex<Option<Cached>>,
    /// Wall time compared with credential expiries.
    clock: Arc<dyn skiff_time::Clock>,
}

impl std::fmt::Debug for ProfileCredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("ProfileCredentialProvider").field("profile", &self.profile_name()).finish_non_exhaustive()
    }
}

impl ProfileCredentialProvider {
    /// The AWS SDK default chain with `profile` (else `AWS_PROFILE`, else `default`).
    pub fn lazy(profile: Option<String>) -> Self {
        Self {
            source: Source::Lazy { profile, chain: tokio::sync::OnceCell::new() },
            cached: tokio::sync::Mutex::new(None),
            clock: skiff_time::system_clock(),
        }
    }

    /// Any AWS SDK credentials provider (tests).
    pub fn from_provider(provider: impl ProvideCredentials + 'static) -> Self {
        Self {
            source: Source::Fixed(SharedCredentialsProvider::new(provider)),
            cached: tokio::sync::Mutex::new(None),
            clock: skiff_time::system_clock(),
        }
    }

    /// Compares credential expiries with wall time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn skiff_time::Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn profile_name(&self) -> Option<&str> {
        match &self.source {
            Source::Lazy { profile, .. } => profile.as_deref(),
            Source::Fixed(_) => None,
        }
    }

    async fn provider(&self) -> SharedCredentialsProvider {
        match &self.source {
            Source::Fixed(p) => p.clone(),
            Source::Lazy { profile, chain } => chain
                .get_or_init(|| async {
                    // ring-based rustls, like object_store's own client (no aws-lc build).
                    let https = aws_smithy_http_client::Builder::new()
                        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                        ))
                        .build_https();
                    let mut builder =
                        DefaultCredentialsChain::builder().configure(ProviderConfig::default().with_http_client(https));
                    if let Some(p) = profile {
                        builder = builder.profile_name(p);
                    }
                    SharedCredentialsProvider::new(builder.build().await)
                })
                .await
                .clone(),
        }
    }

    fn fresh(cached: &Cached, now: SystemTime) -> bool {
        cached.expiry.is_none_or(|e| now + REFRESH_BEFORE_EXPIRY < e)
    }
}

#[async_trait]
impl CredentialProvider for ProfileCredentialProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.system_time();
        if let Some(c) = cached.as_ref()
            && Self::fresh(c, now)
        {
            return Ok(c.credential.clone());
        }
        match self.provider().await.provide_credentials().await {
            Ok(creds) => {
                let credential = Arc::new(AwsCredential {
                    key_id: creds.access_key_id().to_string(),
                    secret_key: creds.secret_access_key().to_string(),
                    token: creds.session_token().map(str::to_string),
                });
                *cached = Some(Cached { credential: credential.clone(), expiry: creds.expiry() });
                Ok(credential)
            }
            Err(e) => {
                if let Some(c) = cached.as_ref()
                    && c.expiry.is_some_and(|exp| now < exp)
                {
                    tracing::warn!(error = %e, "S3 credentials: refresh failed; using the cached ones until they expire");
                    return Ok(c.credential.clone());
                }
                Err(object_store::Error::Unauthenticated {
                    path: String::new(),
                    source: format!(
                        "no AWS credentials from profile '{}' (aws-profile feature; for SSO run `aws sso login`): {}",
                        self.profile_name().unwrap_or("default"),
                        error_chain(&e)
                    )
                    .into(),
                })
            }
        }
    }
}

/// `err: source: source ...` on one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // fake credentials expire relative to the real clock
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::future;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        valid_for: Option<Duration>,
        fail_after_first: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail_after_first && n > 0 {
                return future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded("gone"),
                ));
            }
            let expiry = self.valid_for.map(|d| SystemTime::now() + d);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                Some("token".into()),
                expiry,
                "test",
            )))
        }
    }

    fn provider(valid_for: Option<Duration>, fail_after_first: bool) -> (ProfileCredentialProvider, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let p =
            ProfileCredentialProvider::from_provider(Counting { calls: calls.clone(), valid_for, fail_after_first });
        (p, calls)
    }

    #[tokio::test]
    async fn caches_until_shortly_before_expiry() {
        let (p, calls) = provider(Some(Duration::from_secs(3600)), false);
        let a = p.get_credential().await.expect("cred");
        let b = p.get_credential().await.expect("cred");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.key_id, "AKID0");
        assert_eq!(b.token.as_deref(), Some("token"));

        // Expiring within the refresh margin: every call refreshes.
        let (p, calls) = provider(Some(Duration::from_secs(60)), false);
        p.get_credential().await.expect("cred");
        let again = p.get_credential().await.expect("cred");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(again.key_id, "AKID1");

        // No expiry: cached forever.
        let (p, calls) = provider(None, false);
        for _ in 0..3 {
            p.get_credential().await.expect("cred");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_still_valid_credentials() {
        let (p, calls) = provider(Some(Duration::from_secs(60)), true);
        p.get_credential().await.expect("first");
        let kept = p.get_credential().await.expect("still valid");
        assert_eq!(kept.key_id, "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn selection_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_str().expect("utf8").to_string();
        let sel = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> =
                pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
            profile_selected(&move |k: &str| map.get(k).cloned())
        };
        // Nothing configured: object_store's chain.
        assert!(!sel(&[("HOME", &home)]));
        // Explicit keys beat a profile.
        assert!(!sel(&[("HOME", &home), ("AWS_ACCESS_KEY_ID", "x"), ("AWS_PROFILE", "p")]));
        assert!(sel(&[("HOME", &home), ("AWS_PROFILE", "p")]));
        // A shared config file selects the default profile.
        std::fs::create_dir_all(dir.path().join(".aws")).expect("mkdir");
        std::fs::write(dir.path().join(".aws/config"), "[default]\nregion = eu-west-1\n").expect("write");
        assert!(sel(&[("HOME", &home)]));
        let creds = dir.path().join("creds");
        std::fs::write(&creds, "[x]\n").expect("write");
        assert!(sel(&[("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().expect("utf8"))]));
    }

    /// The real SDK chain reading a profile from a credentials file. Environment variables
    /// cannot be set in-process (no unsafe code), so the test re-runs this test binary with
    /// them set and the `#[ignore]`d child test below.
    #[test]
    fn profile_from_shared_credentials_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\n\
             [skiff-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s3cr3t\n",
        )
        .expect("write credentials");
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["--exact", "aws_profile::tests::child_reads_profile", "--include-ignored", "--nocapture"]);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", dir.path())
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env("AWS_PROFILE", "skiff-test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SKIFF_AWS_PROFILE_CHILD", "1");
        let out = cmd.output().expect("run child");
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "child did not run:\n{text}");
    }

    #[tokio::test]
    #[ignore = "run by profile_from_shared_credentials_file with its environment"]
    async fn child_reads_profile() {
        assert_eq!(std::env::var("SKIFF_AWS_PROFILE_CHILD").as_deref(), Ok("1"));
        let p = provider_from_env().expect("AWS_PROFILE selects the profile chain");
        assert_eq!(p.profile_name(), Some("skiff-test"));
        let c = p.get_credential().await.expect("credentials from the profile");
        assert_eq!(c.key_id, "AKIDPROFILE");
        assert_eq!(c.secret_key, "s3cr3t");
    }
}
