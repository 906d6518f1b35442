//! The `verify-digests` and `audit-manifests` commands, behind the CLI's
//! argument parsing: gather, check, print, export, and pick the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::K8sError;
use super::audit;
use super::digests::{self, Approvals, ContainerCheck};
use super::sarif;
use super::workload::{ApprovedSet, Inventory};
use crate::sink::Sink;

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Sarif,
}

pub struct VerifyOptions {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// A directory of approved manifests instead of the owning workloads.
    pub approved: Option<PathBuf>,
    /// Offline: `kubectl get … -o json` files instead of the API server.
    pub from_files: Vec<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub format: Format,
    pub watch: bool,
}

/// Everything `verify-digests` needs from the CLI's world.
pub struct VerifyContext<'a> {
    /// The configured pipeline outputs the findings also go to (may be empty).
    pub sinks: Vec<Box<dyn Sink>>,
    pub hostname: String,
    pub out: &'a mut dyn Write,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn export(
    sinks: &mut [Box<dyn Sink>],
    checks: &[ContainerCheck],
    hostname: &str,
) -> Result<(), K8sError> {
    let batch = digests::to_processed(checks, hostname, now_ns());
    if batch.is_empty() {
        return Ok(());
    }
    for s in sinks.iter_mut() {
        s.send(&batch)?;
    }
    Ok(())
}

fn print(out: &mut dyn Write, format: Format, checks: &[ContainerCheck]) -> Result<(), K8sError> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &digests::to_json(checks))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        _ => digests::write_table(out, checks)?,
    }
    out.flush()?;
    Ok(())
}

/// Runs `verify-digests`; returns its exit code.
pub fn verify_digests(
    opts: &VerifyOptions,
    mut ctx: VerifyContext<'_>,
    rt: &tokio::runtime::Runtime,
) -> Result<u8, K8sError> {
    let approved = opts
        .approved
        .as_deref()
        .map(ApprovedSet::load)
        .transpose()?;
    if let Some(set) = &approved {
        tracing::info!(workloads = set.len(), "approved manifests loaded");
    }
    let approvals = match &approved {
        Some(set) => Approvals::Manifests(set),
        None => Approvals::Cluster,
    };
    let ns = opts.namespace.as_deref();

    if !opts.from_files.is_empty() {
        let inv = Inventory::from_files(&opts.from_files, ns)?;
        return finish(&inv, &approvals, opts, &mut ctx);
    }

    rt.block_on(async {
        let client = super::client::connect(opts.kubeconfig.as_deref()).await?;
        if !opts.watch {
            let inv = digests::fetch(&client, ns).await?;
            return finish(&inv, &approvals, opts, &mut ctx);
        }
        let VerifyContext {
            sinks,
            hostname,
            out,
            shutdown,
        } = &mut ctx;
        let format = opts.format;
        digests::watch(
            &client,
            ns,
            approved.as_ref(),
            shutdown.clone(),
            |changed| {
                if format == Format::Json {
                    // One JSON object per line and round, for log shippers.
                    for c in changed {
                        serde_json::to_writer(&mut **out, c).map_err(std::io::Error::from)?;
                        writeln!(out)?;
                    }
                    out.flush()?;
                } else {
                    writeln!(out, "--- {}", crate::sink::falco::rfc3339(now_ns()))?;
                    print(&mut **out, format, changed)?;
                }
                // Sinks may block (network exporters): keep them off the
                // runtime's worker.
                tokio::task::block_in_place(|| export(sinks, changed, hostname))
            },
        )
        .await
    })
}

fn finish(
    inv: &Inventory,
    approvals: &Approvals<'_>,
    opts: &VerifyOptions,
    ctx: &mut VerifyContext<'_>,
) -> Result<u8, K8sError> {
    let checks = digests::verify(inv, approvals);
    print(ctx.out, opts.format, &checks)?;
    export(&mut ctx.sinks, &checks, &ctx.hostname)?;
    let deadline =
        std::time::Instant::now() + crate::config::DaemonConfig::default().shutdown_timeout();
    for s in ctx.sinks.iter_mut() {
        s.flush(deadline)?;
    }
    Ok(digests::exit_code(&checks))
}

/// Runs `audit-manifests`; returns its exit code.
pub fn audit_manifests(
    paths: &[PathBuf],
    format: Format,
    out: &mut dyn Write,
) -> Result<u8, K8sError> {
    let report = audit::audit_paths(paths);
    match format {
        Format::Table => audit::write_table(out, &report)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Sarif => {
            let base = std::env::current_dir().unwrap_or_else(|_| Path::new(".").to_path_buf());
            serde_json::to_writer_pretty(&mut *out, &sarif::to_sarif(&report, &base))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(report.exit_code())
}
