//! Local mode. Owned by the local-mode issue.
