//! The ingress handler. Owned by the ingress issue.
