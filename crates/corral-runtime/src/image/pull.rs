//! Pulling from OCI/Docker v2 registries with `oci-client`.

use std::sync::Once;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::OciDistributionError;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::egress::EgressGuard;
use super::{
    ImageError, ImageInfo, ImageStore, NewImage, PullPhase, PullPolicy, PullProgress, RegistryAuth,
    diff_ids, digest_hex, parse_reference, verify,
};

/// rustls needs one process-wide crypto provider; ours is ring (already in
/// the build for the mailer). Installing twice is harmless.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(super) async fn pull(
    store: &ImageStore,
    name: &str,
    auth: &RegistryAuth,
    policy: &PullPolicy,
    progress: &mut (dyn FnMut(PullProgress) + Send),
) -> Result<ImageInfo, ImageError> {
    install_crypto_provider();
    let reference = parse_reference(name)?;
    let guard = EgressGuard::start(policy.allowed_registries.clone())
        .await
        .map_err(|e| ImageError::Other {
            action: "start the pull's egress guard",
            reason: e.to_string(),
        })?;
    let pulled = pull_through(store, &reference, auth, policy, &guard, progress).await;
    match (pulled, guard.refused()) {
        // Whatever the client made of the refusal, say what happened.
        (Err(_), Some(host)) => Err(ImageError::Refused {
            reference: reference.whole(),
            host,
        }),
        (pulled, _) => pulled,
    }
}

/// [`pull`], every connection through `guard` but the insecure registries'.
async fn pull_through(
    store: &ImageStore,
    reference: &oci_client::Reference,
    auth: &RegistryAuth,
    policy: &PullPolicy,
    guard: &EgressGuard,
    progress: &mut (dyn FnMut(PullProgress) + Send),
) -> Result<ImageInfo, ImageError> {
    let whole = reference.whole();
    // The insecure registries are the operator's, reached directly over
    // HTTP; reqwest's no-proxy list names hosts without ports.
    let direct: Vec<&str> = policy
        .insecure_registries
        .iter()
        .map(|r| r.rsplit_once(':').map_or(r.as_str(), |(host, _)| host))
        .collect();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(policy.insecure_registries.clone()),
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        https_proxy: Some(guard.url()),
        http_proxy: Some(guard.url()),
        no_proxy: (!direct.is_empty()).then(|| direct.join(",")),
        ..ClientConfig::default()
    });
    let oci_auth = match auth {
        RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
        RegistryAuth::Basic { username, password } => {
            oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
        }
    };
    let (manifest, manifest_digest, config) = client
        .pull_manifest_and_config(reference, &oci_auth)
        .await
        .map_err(|e| registry_error(reference, "pull the manifest of", e))?;
    let config = config.into_bytes();
    verify(
        || format!("the config of {whole}"),
        &manifest.config.digest,
        &config,
    )?;
    let diff_ids = diff_ids(&config, manifest.layers.len())?;
    let limits = store.limits();

    let _lock = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.lock(false))
            .await
            .map_err(|e| ImageError::Other {
                action: "lock the image store",
                reason: e.to_string(),
            })??
    };

    let mut layers = Vec::with_capacity(manifest.layers.len());
    // Bytes this pull downloads, all layers together (`policy.max_bytes`).
    let mut downloaded = 0u64;
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        digest_hex(&layer.digest)?;
        let total = u64::try_from(layer.size).unwrap_or(0);
        layers.push((layer.digest.clone(), total));
        // Refuse an unknown media type before downloading anything.
        super::Compression::from_media_type(&layer.media_type)?;
        if store.has_layer(&layer.digest)? {
            progress(PullProgress {
                digest: layer.digest.clone(),
                done: total,
                total,
                phase: PullPhase::Cached,
            });
            continue;
        }
        if total > limits.max_bytes {
            return Err(ImageError::LimitExceeded {
                layer: layer.digest.clone(),
                what: "bytes",
                limit: limits.max_bytes,
            });
        }
        downloaded = downloaded.saturating_add(total);
        if downloaded > policy.max_bytes {
            return Err(ImageError::PullLimit {
                reference: whole.clone(),
                what: format!("{} bytes", policy.max_bytes),
            });
        }

        // Download into tmp/, hashing as we go.
        let staging = store.staging(".blob");
        let mut file = tokio::fs::File::create(&staging.path)
            .await
            .map_err(ImageError::io("create", &staging.path))?;
        let mut stream = client
            .pull_blob_stream(reference, layer)
            .await
            .map_err(|e| registry_error(reference, "download a layer of", e))?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        progress(PullProgress {
            digest: layer.digest.clone(),
            done,
            total,
            phase: PullPhase::Downloading,
        });
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    // oci-client's own check fails at the end of the
                    // stream; say what we saw instead.
                    let actual = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
                    if done == total && actual != layer.digest {
                        return Err(ImageError::DigestMismatch {
                            what: format!("layer blob of {whole}"),
                            expected: layer.digest.clone(),
                            actual,
                        });
                    }
                    return Err(ImageError::Registry {
                        action: "download a layer of",
                        reference: whole,
                        source: OciDistributionError::IoError(error),
                    });
                }
            };
            done += chunk.len() as u64;
            if done > total {
                return Err(ImageError::invalid(
                    format!("layer {}", layer.digest),
                    format!("the registry sent more than the {total} bytes the manifest announces"),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(ImageError::io("write", &staging.path))?;
            progress(PullProgress {
                digest: layer.digest.clone(),
                done,
                total,
                phase: PullPhase::Downloading,
            });
        }
        file.flush()
            .await
            .map_err(ImageError::io("write", &staging.path))?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("layer blob of {whole}"),
                expected: layer.digest.clone(),
                actual,
            });
        }
        if done != total {
            return Err(ImageError::invalid(
                format!("layer {}", layer.digest),
                format!("the registry sent {done} bytes, the manifest announces {total}"),
            ));
        }
        progress(PullProgress {
            digest: layer.digest.clone(),
            done,
            total,
            phase: PullPhase::Unpacking,
        });
        let unpack = {
            let store = store.clone();
            let blob_path = staging.path.clone();
            let media_type = layer.media_type.clone();
            let digest = layer.digest.clone();
            tokio::task::spawn_blocking(move || {
                let blob =
                    std::fs::File::open(&blob_path).map_err(ImageError::io("open", &blob_path))?;
                store.store_layer(
                    blob,
                    &blob_path,
                    Some(&media_type),
                    &digest,
                    diff_id.as_deref(),
                )
            })
        };
        unpack.await.map_err(|e| ImageError::Other {
            action: "unpack a layer",
            reason: e.to_string(),
        })??;
        drop(staging);
        progress(PullProgress {
            digest: layer.digest.clone(),
            done,
            total,
            phase: PullPhase::Done,
        });
    }

    store.record(NewImage {
        reference: &whole,
        manifest_digest: &manifest_digest,
        config_digest: &manifest.config.digest,
        config: &config,
        layers: &layers,
    })
}

fn registry_error(
    reference: &oci_client::Reference,
    action: &'static str,
    error: OciDistributionError,
) -> ImageError {
    match &error {
        OciDistributionError::AuthenticationFailure(detail) => ImageError::Unauthorized {
            registry: reference.registry().to_owned(),
            reference: reference.whole(),
            detail: detail.trim().to_owned(),
        },
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            registry: reference.registry().to_owned(),
            reference: reference.whole(),
            detail: format!("401 from {url}"),
        },
        OciDistributionError::ServerError { code: 401, url, .. } => ImageError::Unauthorized {
            registry: reference.registry().to_owned(),
            reference: reference.whole(),
            detail: format!("401 from {url}"),
        },
        _ => ImageError::Registry {
            action,
            reference: reference.whole(),
            source: error,
        },
    }
}
