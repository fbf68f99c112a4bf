//! The completion handler and sweep. Owned by the completion issue.
