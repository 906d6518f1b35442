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

use crate::config::{OtlpConfig, Switch};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
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

#[derive(Debug, Clone)]
pub struct Settings {
    pub protocol: Protocol,
    /// The full URL requests go to.
    pub endpoint: String,
    /// Where the endpoint came from (a key or a variable), for messages.
    pub endpoint_origin: String,
    pub gzip: bool,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub tls: Tls,
}

impl Settings {
    pub fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
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

struct Lookup<'a> {
    env: Env<'a>,
    signal: Signal,
}

impl Lookup<'_> {
    /// The signal-specific variable, then the generic one: (value, name).
    fn get(&self, key: &str) -> Option<(String, String)> {
        let specific = format!("{}{key}", self.signal.env_prefix());
        if let Some(v) = (self.env)(&specific) {
            return Some((v, specific));
        }
        let generic = format!("OTEL_EXPORTER_OTLP_{key}");
        (self.env)(&generic).map(|v| (v, generic))
    }
}

pub fn resolve(
    cfg: &OtlpConfig,
    base_dir: &Path,
    signal: Signal,
    env: Env,
) -> Result<Settings, SettingsError> {
    let look = Lookup { env, signal };
    let invalid = |origin: &str, message: String| SettingsError::Invalid {
        origin: origin.to_string(),
        message,
    };

    let (protocol_text, protocol_origin) = match &cfg.protocol {
        Some(p) => (p.clone(), "outputs.otlp.protocol".to_string()),
        None => look
            .get("PROTOCOL")
            .unwrap_or_else(|| ("http/protobuf".into(), "default".into())),
    };
    let protocol = match protocol_text.trim() {
        "grpc" => Protocol::Grpc,
        "http/protobuf" => Protocol::HttpProtobuf,
        "http/json" => {
            return Err(invalid(
                &protocol_origin,
                "http/json is not supported; use \"grpc\" or \"http/protobuf\"".into(),
            ));
        }
        other => {
            return Err(invalid(
                &protocol_origin,
                format!("unknown protocol {other:?}; use \"grpc\" or \"http/protobuf\""),
            ));
        }
    };

    // (url, origin, is the url final as given?)
    let specific = format!("{}ENDPOINT", signal.env_prefix());
    let (base, endpoint_origin, as_given) = if let Some(e) = &cfg.endpoint {
        (e.clone(), "outputs.otlp.endpoint".to_string(), false)
    } else if let Some(e) = env(&specific) {
        (e, specific, true)
    } else if let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        (e, "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), false)
    } else {
        let d = match protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        };
        (d.to_string(), "default".to_string(), false)
    };
    let base = base.trim().to_string();
    let Some((scheme, rest)) = base.split_once("://") else {
        return Err(invalid(
            &endpoint_origin,
            format!("endpoint {base:?} needs a scheme: http:// or https://"),
        ));
    };
    if scheme != "http" && scheme != "https" {
        return Err(invalid(
            &endpoint_origin,
            format!("endpoint {base:?}: scheme must be http or https"),
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid(
            &endpoint_origin,
            format!("endpoint {base:?} has no host"),
        ));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(invalid(
            &endpoint_origin,
            format!("endpoint {base:?}: {port:?} is not a port"),
        ));
    }
    let endpoint = match protocol {
        Protocol::HttpProtobuf if !as_given => {
            let trimmed = base.trim_end_matches('/');
            if trimmed.ends_with(signal.http_path()) {
                trimmed.to_string()
            } else {
                format!("{trimmed}{}", signal.http_path())
            }
        }
        _ => base,
    };

    let gzip = match &cfg.compression {
        Some(c) => parse_compression(c, "outputs.otlp.compression")?,
        None => match look.get("COMPRESSION") {
            Some((c, origin)) => parse_compression(&c, &origin)?,
            // gzip by default: findings are repetitive text and compress ~10×.
            None => true,
        },
    };

    let timeout = match cfg.timeout_ms {
        Some(ms) => Duration::from_millis(ms),
        None => match look.get("TIMEOUT") {
            Some((t, origin)) => {
                Duration::from_millis(t.trim().parse::<u64>().map_err(|_| {
                    invalid(&origin, format!("{t:?} is not a number of milliseconds"))
                })?)
            }
            None => Duration::from_secs(10),
        },
    };
    if timeout.is_zero() {
        return Err(invalid("timeout", "must be more than 0 ms".into()));
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some((h, origin)) = look.get("HEADERS") {
        headers = parse_headers(&h).map_err(|m| invalid(&origin, m))?;
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
            .or_else(|| look.get(key).map(|(v, _)| PathBuf::from(v)))
    };
    let read = |what: &'static str, path: PathBuf| -> Result<Vec<u8>, SettingsError> {
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
    };
    let ca_pem = path_of(&cfg.tls.ca_file, "CERTIFICATE")
        .map(|p| read("TLS CA file", p))
        .transpose()?;
    let cert = path_of(&cfg.tls.cert_file, "CLIENT_CERTIFICATE");
    let key = path_of(&cfg.tls.key_file, "CLIENT_KEY");
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((
            read("TLS client certificate", c)?,
            read("TLS client key", k)?,
        )),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "outputs.otlp.tls",
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
    };
    if (ca_pem.is_some() || client.is_some()) && !endpoint.starts_with("https://") {
        return Err(invalid(
            &endpoint_origin,
            format!("TLS files are set but the endpoint {endpoint:?} is not https://"),
        ));
    }

    Ok(Settings {
        protocol,
        endpoint,
        endpoint_origin,
        gzip,
        timeout,
        headers,
        tls: Tls { ca_pem, client },
    })
}

fn parse_compression(v: &str, origin: &str) -> Result<bool, SettingsError> {
    match v.trim() {
        "gzip" => Ok(true),
        "none" | "" => Ok(false),
        other => Err(SettingsError::Invalid {
            origin: origin.to_string(),
            message: format!("unknown compression {other:?}; use \"gzip\" or \"none\""),
        }),
    }
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
        assert!(s.gzip);
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
            protocol: Some("grpc".into()),
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
}
