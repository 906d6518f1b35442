//! Where the OTLP exporter sends, how, and with which credentials.
//!
//! Precedence, per key: `[outputs.otlp]` in pipeline.toml (explicit
//! configuration wins, as the OTel SDK specification wants for programmatic
//! settings), then the signal's `OTEL_EXPORTER_OTLP_LOGS_*` /
//! `OTEL_EXPORTER_OTLP_METRICS_*` variable, then the generic
//! `OTEL_EXPORTER_OTLP_*` one, then the OTLP defaults. As the exporter
//! specification says, a generic or configured base endpoint gets the
//! signal's path (`/v1/logs`) appended for OTLP/HTTP; a signal-specific
//! endpoint is used as given.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config::{Compression, Protocol};
use crate::config::{OTLP_TIMEOUT_MS, OtlpConfig, OtlpTlsConfig, Switch};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value that fails a check; there is no underlying error.
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{origin}: {value:?} is not a number of milliseconds")]
    NotMillis {
        origin: String,
        value: String,
        source: std::num::ParseIntError,
    },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(origin: &str, message: String) -> SettingsError {
    SettingsError::Invalid {
        origin: origin.to_string(),
        message,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn env_prefix(self) -> &'static str {
        match self {
            Signal::Logs => "OTEL_EXPORTER_OTLP_LOGS_",
            Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// PEM bytes, read when the settings are resolved so a bad file is
/// reported with its path.
#[derive(Clone)]
pub struct Tls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl Tls {
    fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub protocol: Protocol,
    /// The full URL requests go to.
    pub endpoint: String,
    /// Where the endpoint came from (a key or a variable), for messages.
    pub endpoint_origin: String,
    pub compression: Compression,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub tls: Tls,
}

impl Settings {
    pub fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }

    /// A warning when request headers (usually credentials) would cross
    /// the network in clear text: an `http://` endpoint that is not on
    /// this host.
    pub fn plaintext_headers_warning(&self) -> Option<String> {
        if self.headers.is_empty() || self.is_https() {
            return None;
        }
        let host = self
            .endpoint
            .strip_prefix("http://")
            .unwrap_or(&self.endpoint)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        if matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.") {
            return None;
        }
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        Some(format!(
            "OTLP headers {} are sent IN CLEAR TEXT to {} ({}): anyone on the path can read them; use https://",
            names.join(", "),
            self.endpoint,
            self.endpoint_origin
        ))
    }
}

/// Environment lookups go through this so tests can supply their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether OTLP export is on: explicitly, or (`"auto"`) because an
/// endpoint is configured somewhere.
pub fn active(cfg: &OtlpConfig, env: Env) -> bool {
    match cfg.enabled {
        Switch::On => true,
        Switch::Off => false,
        Switch::Auto => {
            cfg.endpoint.is_some()
                || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_some()
        }
    }
}

/// A value from the environment and the variable it came from.
struct Var {
    value: String,
    name: String,
    /// From the signal's own variable rather than the generic one.
    signal_specific: bool,
}

/// The environment half of the precedence: the signal-specific variable,
/// then the generic one.
struct Lookup<'a> {
    env: Env<'a>,
    signal: Signal,
}

impl Lookup<'_> {
    fn get(&self, key: &str) -> Option<Var> {
        let specific = format!("{}{key}", self.signal.env_prefix());
        if let Some(value) = (self.env)(&specific) {
            return Some(Var {
                value,
                name: specific,
                signal_specific: true,
            });
        }
        let generic = format!("OTEL_EXPORTER_OTLP_{key}");
        (self.env)(&generic).map(|value| Var {
            value,
            name: generic,
            signal_specific: false,
        })
    }
}

pub fn resolve(
    cfg: &OtlpConfig,
    base_dir: &Path,
    signal: Signal,
    env: Env,
) -> Result<Settings, SettingsError> {
    let look = Lookup { env, signal };
    let protocol = protocol(cfg, &look)?;
    let (endpoint, endpoint_origin) = endpoint(cfg, &look, protocol)?;
    let compression = compression(cfg, &look)?;
    let timeout = timeout(cfg, &look)?;
    let headers = headers(cfg, &look)?;
    let tls = tls(&cfg.tls, base_dir, &look)?;
    if tls.is_set() && !endpoint.starts_with("https://") {
        return Err(invalid(
            &endpoint_origin,
            format!("TLS files are set but the endpoint {endpoint:?} is not https://"),
        ));
    }
    Ok(Settings {
        protocol,
        endpoint,
        endpoint_origin,
        compression,
        timeout,
        headers,
        tls,
    })
}

fn protocol(cfg: &OtlpConfig, look: &Lookup) -> Result<Protocol, SettingsError> {
    match (cfg.protocol, look.get("PROTOCOL")) {
        (Some(p), _) => Ok(p),
        (None, Some(var)) => var.value.trim().parse().map_err(|m| invalid(&var.name, m)),
        (None, None) => Ok(Protocol::HttpProtobuf),
    }
}

/// The URL requests go to, and where it came from.
fn endpoint(
    cfg: &OtlpConfig,
    look: &Lookup,
    protocol: Protocol,
) -> Result<(String, String), SettingsError> {
    // A signal-specific variable is the whole URL; any other base gets
    // the signal's path.
    let (base, origin, as_given) = if let Some(e) = &cfg.endpoint {
        (e.clone(), "outputs.otlp.endpoint".to_string(), false)
    } else if let Some(var) = look.get("ENDPOINT") {
        (var.value, var.name, var.signal_specific)
    } else {
        let d = match protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        };
        (d.to_string(), "default".to_string(), false)
    };
    let base = base.trim().to_string();
    check_url(&base).map_err(|m| invalid(&origin, m))?;
    let path = look.signal.http_path();
    let endpoint = match protocol {
        Protocol::HttpProtobuf if !as_given => {
            let trimmed = base.trim_end_matches('/');
            if trimmed.ends_with(path) {
                trimmed.to_string()
            } else {
                format!("{trimmed}{path}")
            }
        }
        _ => base,
    };
    Ok((endpoint, origin))
}

/// An http(s) URL with a host and, if any, a numeric port.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "endpoint {url:?} needs a scheme: http:// or https://"
        ));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("endpoint {url:?}: scheme must be http or https"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("endpoint {url:?} has no host"));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("endpoint {url:?}: {port:?} is not a port"));
    }
    Ok(())
}

fn compression(cfg: &OtlpConfig, look: &Lookup) -> Result<Compression, SettingsError> {
    match (cfg.compression, look.get("COMPRESSION")) {
        (Some(c), _) => Ok(c),
        (None, Some(var)) => match var.value.trim() {
            "" => Ok(Compression::None),
            v => v.parse().map_err(|m| invalid(&var.name, m)),
        },
        // gzip by default: findings are repetitive text and compress ~10×.
        (None, None) => Ok(Compression::Gzip),
    }
}

fn timeout(cfg: &OtlpConfig, look: &Lookup) -> Result<Duration, SettingsError> {
    // The configured value was range-checked with the rest of the file.
    if let Some(ms) = cfg.timeout_ms {
        return Ok(Duration::from_millis(ms));
    }
    let Some(var) = look.get("TIMEOUT") else {
        return Ok(Duration::from_secs(10));
    };
    let ms = var
        .value
        .trim()
        .parse::<u64>()
        .map_err(|source| SettingsError::NotMillis {
            origin: var.name.clone(),
            value: var.value.clone(),
            source,
        })?;
    if ms == 0 {
        return Err(invalid("timeout", "must be more than 0 ms".into()));
    }
    if !OTLP_TIMEOUT_MS.contains(&ms) {
        return Err(invalid(
            &var.name,
            format!(
                "must be between {} and {} ms, not {ms}",
                OTLP_TIMEOUT_MS.start(),
                OTLP_TIMEOUT_MS.end()
            ),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// The environment's headers, then the configured ones over them (names
/// compared without case).
fn headers(cfg: &OtlpConfig, look: &Lookup) -> Result<Vec<(String, String)>, SettingsError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(var) = look.get("HEADERS") {
        headers = parse_headers(&var.value).map_err(|m| invalid(&var.name, m))?;
    }
    for (k, v) in &cfg.headers {
        headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        headers.push((k.to_ascii_lowercase(), v.clone()));
    }
    for (k, v) in &headers {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(invalid(
                "headers",
                format!("{k:?} is not a valid header name"),
            ));
        }
        if v.bytes().any(|b| b.is_ascii_control()) {
            return Err(invalid(
                "headers",
                format!("the value of {k:?} has control characters"),
            ));
        }
    }
    Ok(headers)
}

/// The CA bundle and client certificate, read and checked to be PEM.
fn tls(cfg: &OtlpTlsConfig, base_dir: &Path, look: &Lookup) -> Result<Tls, SettingsError> {
    let path_of = |configured: &Option<PathBuf>, key: &str| -> Option<PathBuf> {
        configured
            .as_ref()
            .map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    base_dir.join(p)
                }
            })
            .or_else(|| look.get(key).map(|var| PathBuf::from(var.value)))
    };
    let ca_pem = path_of(&cfg.ca_file, "CERTIFICATE")
        .map(|p| read_pem("TLS CA file", p))
        .transpose()?;
    let cert = path_of(&cfg.cert_file, "CLIENT_CERTIFICATE");
    let key = path_of(&cfg.key_file, "CLIENT_KEY");
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((
            read_pem("TLS client certificate", c)?,
            read_pem("TLS client key", k)?,
        )),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "outputs.otlp.tls",
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
    };
    Ok(Tls { ca_pem, client })
}

fn read_pem(what: &'static str, path: PathBuf) -> Result<Vec<u8>, SettingsError> {
    let bytes = std::fs::read(&path).map_err(|source| SettingsError::File {
        what,
        path: path.clone(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(SettingsError::File {
            what,
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PEM file"),
        });
    }
    Ok(bytes)
}

/// `key1=value1,key2=value2`, values percent-encoded (W3C baggage format,
/// as the OTel specification prescribes for `OTEL_EXPORTER_OTLP_HEADERS`).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("header {item:?} is not key=value"))?;
        let v = percent_decode(v.trim()).ok_or_else(|| format!("header {k:?}: bad %-escape"))?;
        out.push((k.trim().to_ascii_lowercase(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn resolve_with(cfg: &OtlpConfig, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env = env_of(vars);
        resolve(cfg, Path::new("/"), Signal::Logs, &env)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = resolve_with(&OtlpConfig::default(), &[]).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://localhost:4318/v1/logs");
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn signal_variables_beat_generic_ones_and_config_beats_both() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:9999/custom",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=two%20words"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1500"),
        ];
        let s = resolve_with(&OtlpConfig::default(), &vars).unwrap();
        // The signal endpoint is used as given, without /v1/logs.
        assert_eq!(s.endpoint, "http://logs:9999/custom");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(
            s.headers,
            vec![("a".into(), "1".into()), ("b".into(), "two words".into())]
        );

        let generic_only = resolve_with(&OtlpConfig::default(), &vars[..1]).unwrap();
        assert_eq!(generic_only.endpoint, "http://generic:4318/v1/logs");

        let mut cfg = OtlpConfig {
            endpoint: Some("https://configured:4317".into()),
            protocol: Some(Protocol::Grpc),
            ..OtlpConfig::default()
        };
        cfg.headers.insert("A".into(), "override".into());
        let s = resolve_with(&cfg, &vars).unwrap();
        assert_eq!(s.endpoint, "https://configured:4317");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(
            s.headers,
            vec![
                ("b".into(), "two words".into()),
                ("a".into(), "override".into())
            ]
        );
    }

    #[test]
    fn bad_values_say_where_they_came_from() {
        let e = resolve_with(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("carrier-pigeon"),
            "{e}"
        );
        let cfg = OtlpConfig {
            endpoint: Some("collector:4317".into()),
            ..OtlpConfig::default()
        };
        let e = resolve_with(&cfg, &[]).unwrap_err().to_string();
        assert!(
            e.contains("outputs.otlp.endpoint") && e.contains("scheme"),
            "{e}"
        );
        let cfg = OtlpConfig {
            endpoint: Some("http://collector:43x7".into()),
            ..OtlpConfig::default()
        };
        assert!(
            resolve_with(&cfg, &[])
                .unwrap_err()
                .to_string()
                .contains("not a port")
        );
    }

    #[test]
    fn tls_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let mut cfg = OtlpConfig {
            endpoint: Some("https://collector:4317".into()),
            ..OtlpConfig::default()
        };
        cfg.tls.ca_file = Some(bad.clone());
        let e = resolve_with(&cfg, &[]).unwrap_err().to_string();
        assert!(
            e.contains("TLS CA file") && e.contains("bad.pem") && e.contains("PEM"),
            "{e}"
        );
        cfg.tls.ca_file = Some(dir.path().join("missing.pem"));
        let e = resolve_with(&cfg, &[]).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        cfg.tls.ca_file = None;
        cfg.tls.cert_file = Some(bad);
        let e = resolve_with(&cfg, &[]).unwrap_err().to_string();
        assert!(e.contains("key_file"), "{e}");
    }

    #[test]
    fn auto_turns_on_with_an_endpoint() {
        let none = env_of(&[]);
        assert!(!active(&OtlpConfig::default(), &none));
        let some = env_of(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://x:1")]);
        assert!(active(&OtlpConfig::default(), &some));
        let off = OtlpConfig {
            enabled: Switch::Off,
            ..OtlpConfig::default()
        };
        assert!(!active(&off, &some));
    }

    #[test]
    fn headers_over_plain_http_to_another_host_are_warned_about() {
        let with = |endpoint: &str, headers: &[(&str, &str)]| {
            let cfg = OtlpConfig {
                endpoint: Some(endpoint.into()),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..OtlpConfig::default()
            };
            resolve_with(&cfg, &[]).unwrap().plaintext_headers_warning()
        };
        let auth = [("authorization", "Bearer s3cret")];
        let w = with("http://collector.example:4318", &auth).expect("a warning");
        assert!(
            w.contains("authorization") && w.contains("CLEAR TEXT"),
            "{w}"
        );
        assert!(
            !w.contains("s3cret"),
            "the value itself is never logged: {w}"
        );
        assert_eq!(with("https://collector.example:4318", &auth), None);
        assert_eq!(with("http://localhost:4318", &auth), None);
        assert_eq!(with("http://127.0.0.1:4317", &auth), None);
        assert_eq!(with("http://collector.example:4318", &[]), None);
    }
}
