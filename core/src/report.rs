//! Errors as one line for logs and for the few messages that name a cause: the error and
//! each of its `source()`s, outermost first. Errors here never carry secrets (they are
//! `Secret`-free by construction), so the chain is safe to log.

/// `outer: inner: innermost`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        // thiserror's `transparent` and "x: {0}" styles would otherwise repeat a cause.
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner {0}")]
    struct Inner(u8);

    #[test]
    fn chains_every_source() {
        assert_eq!(chain(&Outer(Inner(7))), "outer: inner 7");
        assert_eq!(chain(&Inner(1)), "inner 1");
    }
}
