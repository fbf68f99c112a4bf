//! Rendering replies for Slack and Mattermost. Owned by the completion issue.
