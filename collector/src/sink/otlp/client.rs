//! Builds opentelemetry-otlp exporters (logs and metrics) from resolved
//! [`Settings`]: transport, compression, headers, TLS, retry policy.
//!
//! Must be called inside a tokio runtime: tonic channels spawn their
//! connection tasks there.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{
    Compression, LogExporter, MetricExporter, RetryPolicy, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};

use super::said;
use super::settings::{self, Protocol, Settings};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `what` names the setting the failure is about, when one is.
    #[error("OTLP exporter for {endpoint}: {what}{source}")]
    Build {
        endpoint: String,
        what: String,
        source: BoxError,
    },
    #[error("OTLP exporter for {endpoint}: no trusted CA certificates")]
    NoRoots { endpoint: String },
}

/// A failure building `s`'s exporter; `what` is "" or ends in ": ".
fn build_err(s: &Settings, what: impl Into<String>, source: impl Into<BoxError>) -> ClientError {
    ClientError::Build {
        endpoint: s.endpoint.clone(),
        what: what.into(),
        source: source.into(),
    }
}

/// The exporter's own retries are short (it retries what the OTLP spec
/// calls retryable, honouring Retry-After / RetryInfo); the spool's loop
/// retries for as long as the backend stays down.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::recommended().with_max_retries(2)
}

fn metadata(s: &Settings) -> Result<MetadataMap, ClientError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &s.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| build_err(s, format!("header {k:?}: "), e))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| build_err(s, format!("header {k:?}: "), e))?;
        headers.insert(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

fn tonic_tls(s: &Settings) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    tls = match &s.tls.ca_pem {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_native_roots(),
    };
    if let Some((cert, key)) = &s.tls.client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

/// A rustls configuration for OTLP/HTTP: the CA file or the system roots,
/// and the client certificate when set.
fn rustls_config(s: &Settings) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &s.tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| build_err(s, "TLS CA file: ", e))?;
                roots
                    .add(cert)
                    .map_err(|e| build_err(s, "TLS CA file: ", e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unparsable system certificate must not disable TLS.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(ClientError::NoRoots {
            endpoint: s.endpoint.clone(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| build_err(s, "", e))?
        .with_root_certificates(roots);
    match &s.tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| build_err(s, "TLS client certificate: ", e))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| build_err(s, "TLS client key: ", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| build_err(s, "TLS client certificate: ", e))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn http_client(s: &Settings) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder().timeout(s.timeout);
    if s.is_https() {
        b = b.tls_backend_preconfigured(rustls_config(s)?);
    }
    b.build().map_err(|e| build_err(s, "", e))
}

/// What every gRPC exporter gets, logs or metrics.
fn over_grpc<B: WithExportConfig + WithTonicConfig>(b: B, s: &Settings) -> Result<B, ClientError> {
    let mut b = b
        .with_endpoint(s.endpoint.clone())
        .with_timeout(s.timeout)
        .with_metadata(metadata(s)?)
        .with_retry_policy(retry_policy());
    if s.compression == settings::Compression::Gzip {
        b = b.with_compression(Compression::Gzip);
    }
    if s.is_https() {
        b = b.with_tls_config(tonic_tls(s));
    }
    Ok(b)
}

/// What every OTLP/HTTP exporter gets, logs or metrics, over `client`.
fn over_http<B: WithExportConfig + WithHttpConfig>(
    b: B,
    s: &Settings,
    client: impl opentelemetry_http::HttpClient + 'static,
) -> Result<B, ClientError> {
    let mut b = b
        .with_endpoint(s.endpoint.clone())
        .with_timeout(s.timeout)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .with_headers(s.headers.iter().cloned().collect::<HashMap<_, _>>())
        .with_retry_policy(retry_policy());
    if s.compression == settings::Compression::Gzip {
        b = b.with_compression(Compression::Gzip);
    }
    Ok(b)
}

pub fn log_exporter(s: &Settings) -> Result<LogExporter, ClientError> {
    match s.protocol {
        Protocol::Grpc => over_grpc(LogExporter::builder().with_tonic(), s)?.build(),
        // A refused logs export is reported with the backend's reason.
        Protocol::HttpProtobuf => over_http(
            LogExporter::builder().with_http(),
            s,
            said::Recording(http_client(s)?),
        )?
        .build(),
    }
    .map_err(|e| build_err(s, "", e))
}

pub fn metric_exporter(s: &Settings) -> Result<MetricExporter, ClientError> {
    match s.protocol {
        Protocol::Grpc => over_grpc(MetricExporter::builder().with_tonic(), s)?.build(),
        Protocol::HttpProtobuf => {
            over_http(MetricExporter::builder().with_http(), s, http_client(s)?)?.build()
        }
    }
    .map_err(|e| build_err(s, "", e))
}
