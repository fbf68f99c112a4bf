//! Mattermost outgoing messages. Owned by the completion issue.
