//! Mattermost incoming slash commands. Owned by the ingress issue.
