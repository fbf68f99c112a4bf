//! The command grammar: `run <job> [args]`, `help`. Owned by the ingress issue.
