//! Links from chat users to GitLab users (`chatops users link|unlink|list`): the use case,
//! free of any CLI. The caller prints the outcome.

use crate::gitlab::{GitLab, GitLabError};
use crate::ids::{ChatUserId, TeamId};
use crate::run::UserLink;
use crate::store::{RunStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("expected <team id>/<chat user id>, e.g. T0123/U0456; got {0:?}")]
    BadChatUser(String),
    #[error("the GitLab username is empty")]
    EmptyUsername,
    #[error("the run store failed")]
    Store(#[from] StoreError),
    #[error("GitLab could not be asked about the user")]
    GitLab(#[from] GitLabError),
}

/// `TEAM/USER` → its two ids.
pub fn parse_chat_user(s: &str) -> Result<(TeamId, ChatUserId), UsersError> {
    match s.split_once('/') {
        Some((t, u)) if !t.trim().is_empty() && !u.trim().is_empty() => {
            Ok((TeamId::new(t.trim()), ChatUserId::new(u.trim())))
        }
        _ => Err(UsersError::BadChatUser(s.to_owned())),
    }
}

/// What `link` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// Linked to this (GitLab's own spelling of the) username; `checked` says whether GitLab
    /// was asked (it is not when no token is configured).
    Linked { username: String, checked: bool },
    /// GitLab has no such user: nothing linked.
    NoSuchUser(String),
}

/// Link `chat_user` (`TEAM/USER`) to `username`, checked on GitLab when `gitlab` is given.
pub async fn link(
    store: &dyn RunStore,
    gitlab: Option<&dyn GitLab>,
    chat_user: &str,
    username: &str,
    now: u64,
) -> Result<Linked, UsersError> {
    let (team_id, chat_user_id) = parse_chat_user(chat_user)?;
    let username = username.trim().trim_start_matches('@');
    if username.is_empty() {
        return Err(UsersError::EmptyUsername);
    }
    let (canonical, id, checked) = match gitlab {
        Some(gl) => match gl.user_by_username(username).await? {
            Some(u) => (u.username, Some(u.id), true),
            None => return Ok(Linked::NoSuchUser(username.to_owned())),
        },
        None => (username.to_owned(), None, false),
    };
    store
        .link_user(&UserLink {
            team_id,
            chat_user_id,
            gitlab_username: canonical.clone(),
            gitlab_user_id: id,
            linked_at: now,
            platform: None,
            grant: None,
        })
        .await?;
    Ok(Linked::Linked {
        username: canonical,
        checked,
    })
}

/// Remove the link of `chat_user`; whether there was one.
pub async fn unlink(store: &dyn RunStore, chat_user: &str) -> Result<bool, UsersError> {
    let (team, user) = parse_chat_user(chat_user)?;
    Ok(store.unlink_user(team.as_str(), user.as_str()).await?)
}

/// Every link.
pub async fn list(store: &dyn RunStore) -> Result<Vec<UserLink>, UsersError> {
    Ok(store.list_users().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_users_parse() {
        let table: &[(&str, Option<(&str, &str)>)] = &[
            ("T1/U1", Some(("T1", "U1"))),
            (" T1 / U1 ", Some(("T1", "U1"))),
            ("T1", None),
            ("/U1", None),
            ("T1/", None),
            ("", None),
        ];
        for (input, want) in table {
            let got = parse_chat_user(input).ok();
            let got = got.as_ref().map(|(t, u)| (t.as_str(), u.as_str()));
            assert_eq!(got, *want, "{input:?}");
        }
    }
}
