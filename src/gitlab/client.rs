//! The real GitLab adapter over HTTPS (`GITLAB_URL`, `GITLAB_TOKEN`). Owned by the
//! dispatcher issue.

/// GitLab REST API v4 client.
pub struct GitLabClient;
