//! GitLab HTTP stand-in. Owned by the dispatcher issue.
