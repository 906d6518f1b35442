//! Errors as one log line.

/// `e` and each of its causes, joined with ": ": the errors below say only
/// their own part, so one line tells the whole story.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
