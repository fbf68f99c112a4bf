//! Newtypes for the identifiers that cross system boundaries, so a pipeline id can never be
//! passed where a job id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

numeric_id!(
    /// A GitLab project's numeric id.
    ProjectId
);
numeric_id!(
    /// A GitLab pipeline id (global, not the per-project iid).
    PipelineId
);
numeric_id!(
    /// A GitLab job (build) id.
    JobId
);
numeric_id!(
    /// A GitLab user's numeric id.
    GitLabUserId
);
string_id!(
    /// A chat channel id (`C…`/`G…`/`D…` on Slack, 26-char id on Mattermost).
    ChannelId
);
string_id!(
    /// A chat user id (`U…`/`W…` on Slack).
    ChatUserId
);
string_id!(
    /// A chat workspace/team id (`T…` on Slack).
    TeamId
);
string_id!(
    /// A Slack message's `ts` (its id within a channel), as `chat.postMessage` returns it and
    /// `chat.update` takes it.
    MessageTs
);
string_id!(
    /// Our id for one slash-command request; stable across retries of the same request,
    /// so every later step can deduplicate on it.
    RequestId
);

/// A GitLab project as configured: a numeric id or a `group/project` path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectRef(pub String);

impl ProjectRef {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The form GitLab's REST API takes in `/projects/:id`: the id, or the URL-encoded path.
    pub fn url_segment(&self) -> String {
        percent_encoding::utf8_percent_encode(&self.0, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_url_encoded() {
        assert_eq!(
            ProjectRef::new("group/sub/proj").url_segment(),
            "group%2Fsub%2Fproj"
        );
        assert_eq!(ProjectRef::new("42").url_segment(), "42");
    }
}
