//! Facts about the node the daemon runs on, shared by the sources (events
//! carry the host name) and the sinks (the OTLP resource does).

/// The host name put into events and telemetry: `configured` when the
/// operator set one (`[daemon] hostname`), else the kernel's.
pub fn hostname(configured: Option<&str>) -> String {
    if let Some(h) = configured {
        return h.to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn configured_name_wins() {
        assert_eq!(super::hostname(Some("node-1")), "node-1");
        assert!(!super::hostname(None).is_empty());
    }
}
