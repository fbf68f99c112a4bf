//! Mattermost: slash-command payloads, token check and outgoing messages. Owned by the ingress issue (incoming) and the completion issue (outgoing).
