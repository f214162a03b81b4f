//! Principals: who a request comes from, what it may see and how much it
//! may use.
//!
//! A token stands for a principal: an `[[auth.users]]` entry (a name, the
//! SHA-256 of its token, a role, its limits) or one of the plain
//! `auth.tokens` (each an admin named `token-<first 8 hex of its hash>`, so
//! the name stays the same while the token does). Only hashes are kept;
//! a presented token is hashed and compared with every one in constant
//! time. With no tokens at all there is one principal, `local`, an admin.
//!
//! A `user` sees and touches only the sessions it owns; an `admin` sees
//! all. Limits (sessions at once, tasks running at once, model tokens per
//! UTC day) apply to users from `[auth.limits]` unless their entry says
//! otherwise; admins have only the limits their own entry sets.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::Role;
pub use crate::config::valid_principal_name as valid_name;
use crate::config::{AuthConfig, LimitsConfig, UserConfig};

/// The principal of a server without tokens.
pub const LOCAL: &str = "local";

/// What one principal may use at once or per day; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: Option<u64>,
    pub max_running_tasks: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    fn from_config(c: &LimitsConfig) -> Self {
        let some = |n: u64| (n > 0).then_some(n);
        Self {
            max_sessions: some(c.max_sessions),
            max_running_tasks: some(c.max_running_tasks),
            tokens_per_day: some(c.tokens_per_day),
        }
    }

    /// `base` with what `user` sets in place of its values (0: no limit).
    fn for_user(base: Limits, user: &UserConfig) -> Self {
        let own = |set: Option<u64>, base: Option<u64>| match set {
            Some(0) => None,
            Some(n) => Some(n),
            None => base,
        };
        Self {
            max_sessions: own(user.max_sessions, base.max_sessions),
            max_running_tasks: own(user.max_running_tasks, base.max_running_tasks),
            tokens_per_day: own(user.tokens_per_day, base.tokens_per_day),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub limits: Limits,
}

impl Principal {
    /// The one principal of a server without tokens.
    pub fn local() -> Self {
        Self {
            name: LOCAL.into(),
            role: Role::Admin,
            limits: Limits::default(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether it may see and touch a session `owner` owns.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_admin() || self.name == owner
    }
}

/// A limit a principal reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Sessions,
    RunningTasks,
    TokensPerDay,
}

impl Quota {
    /// Its name on the wire, as `[auth.limits]` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "max_sessions",
            Self::RunningTasks => "max_running_tasks",
            Self::TokensPerDay => "tokens_per_day",
        }
    }

    /// Refused when `used` has reached `limit`.
    pub fn check(self, principal: &str, limit: u64, used: u64) -> Result<(), QuotaExceeded> {
        if used < limit {
            return Ok(());
        }
        Err(QuotaExceeded {
            principal: principal.to_string(),
            quota: self,
            limit,
            used,
        })
    }

    fn what(self) -> &'static str {
        match self {
            Self::Sessions => "sessions at once",
            Self::RunningTasks => "tasks running at once",
            Self::TokensPerDay => "model tokens per day (UTC)",
        }
    }
}

/// A request that would take a principal past one of its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Quota {} reached: {principal} may have {limit} {}, and has {used}",
    quota.as_str(),
    quota.what()
)]
pub struct QuotaExceeded {
    pub principal: String,
    pub quota: Quota,
    pub limit: u64,
    pub used: u64,
}

/// Every principal the configuration names, found by token or by name.
#[derive(Debug)]
pub struct Principals {
    by_hash: Vec<([u8; 32], Arc<Principal>)>,
    by_name: HashMap<String, Arc<Principal>>,
    /// The limits of a user the configuration no longer names (its
    /// sessions are still there).
    user_limits: Limits,
}

impl Principals {
    pub fn new(auth: &AuthConfig) -> Self {
        let user_limits = Limits::from_config(&auth.limits);
        let mut by_hash = Vec::new();
        for token in &auth.tokens {
            let hash = hash_token(token);
            let name = format!("token-{}", &hex(&hash)[..8]);
            let admin = Principal {
                name,
                role: Role::Admin,
                limits: Limits::default(),
            };
            by_hash.push((hash, Arc::new(admin)));
        }
        for user in &auth.users {
            let mut hash = [0u8; 32];
            for (i, byte) in hash.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&user.token_sha256[2 * i..2 * i + 2], 16)
                    .expect("token_sha256 was checked when the config was loaded");
            }
            let base = match user.role {
                Role::User => user_limits,
                Role::Admin => Limits::default(),
            };
            let principal = Principal {
                name: user.name.clone(),
                role: user.role,
                limits: Limits::for_user(base, user),
            };
            by_hash.push((hash, Arc::new(principal)));
        }
        let by_name = by_hash
            .iter()
            .map(|(_, p)| (p.name.clone(), p.clone()))
            .collect();
        Self {
            by_hash,
            by_name,
            user_limits,
        }
    }

    /// Whether requests must present a token.
    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// The principal `token` stands for, looking at every one of them.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let given = hash_token(token);
        let mut found = None;
        for (hash, principal) in &self.by_hash {
            if bool::from(hash.ct_eq(&given)) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The principal named `name`: a configured one, `local`, or (for the
    /// sessions of one the configuration no longer names) a user with the
    /// default limits.
    pub fn named(&self, name: &str) -> Arc<Principal> {
        if let Some(p) = self.by_name.get(name) {
            return p.clone();
        }
        if name == LOCAL || !self.enabled() {
            return Arc::new(Principal::local());
        }
        Arc::new(Principal {
            name: name.to_string(),
            role: Role::User,
            limits: self.user_limits,
        })
    }
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token in hex, as `token_sha256` takes it.
pub fn token_sha256(token: &str) -> String {
    hex(&hash_token(token))
}

/// A fresh token: 32 random bytes, URL-safe, prefixed so it is recognised.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("crg_{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, token: &str, role: Role) -> UserConfig {
        UserConfig {
            name: name.into(),
            token_sha256: token_sha256(token),
            role,
            max_sessions: None,
            max_running_tasks: Some(0),
            tokens_per_day: Some(500),
        }
    }

    #[test]
    fn tokens_find_their_principal_with_its_role_and_limits() {
        let auth = AuthConfig {
            tokens: vec!["a-legacy-admin-token".into()],
            users: vec![
                user("alice", "alice-token-0123456", Role::User),
                user("root", "root-token-0123456789", Role::Admin),
            ],
            ..AuthConfig::default()
        };
        let all = Principals::new(&auth);
        assert!(all.enabled());
        let alice = all.authenticate("alice-token-0123456").unwrap();
        assert_eq!((alice.name.as_str(), alice.role), ("alice", Role::User));
        // Its own entry wins over [auth.limits]; 0 is no limit.
        assert_eq!(
            alice.limits,
            Limits {
                max_sessions: Some(20),
                max_running_tasks: None,
                tokens_per_day: Some(500),
            }
        );
        let root = all.authenticate("root-token-0123456789").unwrap();
        assert_eq!(root.limits.max_sessions, None, "admins: only their own");
        let legacy = all.authenticate("a-legacy-admin-token").unwrap();
        assert!(legacy.is_admin() && legacy.name.starts_with("token-"));
        assert_eq!(
            legacy.name,
            all.authenticate("a-legacy-admin-token").unwrap().name
        );
        assert!(all.authenticate("alice-token-012345").is_none());
        assert!(all.authenticate("").is_none());
        // Who may see what.
        assert!(alice.may_see("alice") && !alice.may_see("bob"));
        assert!(root.may_see("alice"));
        // A name the config lost is a user with the default limits.
        let gone = all.named("bob");
        assert_eq!(
            (gone.role, gone.limits.max_sessions),
            (Role::User, Some(20))
        );
    }

    #[test]
    fn without_tokens_everyone_is_local_and_an_admin() {
        let all = Principals::new(&AuthConfig::default());
        assert!(!all.enabled());
        assert_eq!(*all.named(LOCAL), Principal::local());
        assert!(Principal::local().is_admin());
    }

    #[test]
    fn a_fresh_token_hashes_to_what_the_config_takes() {
        let t = new_token();
        assert!(t.starts_with("crg_") && t.len() == 68, "{t}");
        assert_ne!(t, new_token());
        assert_eq!(token_sha256(&t).len(), 64);
    }
}
