//! An in-memory GitLab for unit tests. Owned by the dispatcher issue.

/// In-memory GitLab.
pub struct FakeGitLab;
