//! Rules and [`verify`]: Go Micro's `auth.Verify`, free of I/O.
//!
//! Semantics (Go Micro's `auth/rules.go`): the rules whose resource matches are taken by
//! priority, highest first (stable: equal priorities keep their order); the first rule that
//! applies to the caller decides. A rule's type, name and endpoint match when equal (ignoring
//! ASCII case, as Go's `strings.EqualFold`) or `*`; an endpoint rule `a/b/*` also matches every
//! endpoint under the path `a/b/`. Scope `""` applies to everyone, even without an account; `"*"`
//! to any account; any other scope to accounts that hold it. No rule applied: forbidden.
//!
//! micro's documented extension: an endpoint rule `Inventory.*` matches every endpoint whose
//! name starts with `Inventory.` (Go Micro only knows the path form `a/*`).

use serde::{Deserialize, Serialize};

use crate::Account;

/// Scope of a rule that applies to everyone, even callers without an account.
pub const SCOPE_PUBLIC: &str = "";
/// Scope of a rule that applies to any caller with an account.
pub const SCOPE_ACCOUNT: &str = "*";
/// Resource type of a service endpoint.
pub const TYPE_SERVICE: &str = "service";
/// Resource type of a broker topic.
pub const TYPE_TOPIC: &str = "topic";

/// What a rule is about: a service endpoint (`type` `"service"`), a topic (`"topic"`), …
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    /// The kind of resource, or `*`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name (a service's, a topic's), or `*`.
    pub name: String,
    /// The endpoint (`Greeter.Hello`), `*`, a path prefix `a/*` or a prefix `Greeter.*`.
    pub endpoint: String,
}

impl Resource {
    /// A resource of type `kind`.
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        endpoint: impl Into<String>,
    ) -> Self {
        Resource {
            kind: kind.into(),
            name: name.into(),
            endpoint: endpoint.into(),
        }
    }

    /// A service endpoint: type `"service"`.
    pub fn service(name: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Resource::new(TYPE_SERVICE, name, endpoint)
    }

    /// Any resource (`*` everywhere).
    pub fn any() -> Self {
        Resource::new("*", "*", "*")
    }
}

/// Whether a rule grants or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Access is granted.
    Grant,
    /// Access is denied.
    Deny,
}

/// One access rule (Go Micro's `auth.Rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Its id (rules are kept and revoked by id).
    pub id: String,
    /// Who it applies to: `""` everyone, `"*"` any account, else accounts with this scope.
    pub scope: String,
    /// What it applies to.
    pub resource: Resource,
    /// Grant or deny.
    pub access: Access,
    /// Higher is considered first.
    pub priority: i32,
}

impl Rule {
    /// A rule granting `scope` access to `resource`, priority 0.
    pub fn grant(id: impl Into<String>, scope: impl Into<String>, resource: Resource) -> Self {
        Rule {
            id: id.into(),
            scope: scope.into(),
            resource,
            access: Access::Grant,
            priority: 0,
        }
    }

    /// A rule denying `scope` access to `resource`, priority 0.
    pub fn deny(id: impl Into<String>, scope: impl Into<String>, resource: Resource) -> Self {
        Rule {
            access: Access::Deny,
            ..Rule::grant(id, scope, resource)
        }
    }

    /// The same rule with another priority.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Whether this rule is about `resource`.
    pub fn matches(&self, resource: &Resource) -> bool {
        matches_exact(&self.resource.kind, &resource.kind)
            && matches_exact(&self.resource.name, &resource.name)
            && matches_endpoint(&self.resource.endpoint, &resource.endpoint)
    }
}

fn matches_exact(rule: &str, value: &str) -> bool {
    rule == "*" || rule.eq_ignore_ascii_case(value)
}

fn matches_endpoint(rule: &str, endpoint: &str) -> bool {
    if matches_exact(rule, endpoint) {
        return true;
    }
    // Go Micro: `a/b/*` matches `a/b/c` (a path prefix, component by component).
    if let Some(prefix) = rule.strip_suffix("/*") {
        let components: Vec<&str> = endpoint.split('/').collect();
        if components.len() > 1 {
            return (1..=components.len())
                .any(|i| components[..i].join("/").eq_ignore_ascii_case(prefix));
        }
        return false;
    }
    // micro's extension: `Inventory.*` matches `Inventory.Reserve`.
    if let Some(prefix) = rule.strip_suffix(".*") {
        return endpoint.len() > prefix.len() + 1
            && endpoint.is_char_boundary(prefix.len() + 1)
            && endpoint[..prefix.len()].eq_ignore_ascii_case(prefix)
            && endpoint.as_bytes()[prefix.len()] == b'.';
    }
    false
}

/// The id of the rule that makes `Debug.Health` public by default.
pub const HEALTH_RULE: &str = "micro.debug.health";

/// The rules every node adds to those in the store: `Debug.Health` of every service is public,
/// at the lowest priority, so any rule of yours that matches it and applies decides first.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule::grant(
            HEALTH_RULE,
            SCOPE_PUBLIC,
            Resource::service("*", "Debug.Health"),
        )
        .priority(i32::MIN),
    ]
}

/// Why [`verify`] refused: without an account that is `401`, with one `403`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No account, and no public rule granted: `401`.
    Unauthorized,
    /// An account, but no rule granted it (or one denied it): `403`.
    Forbidden,
}

impl Denied {
    /// The HTTP-style code: 401 or 403.
    pub fn code(self) -> u16 {
        match self {
            Denied::Unauthorized => 401,
            Denied::Forbidden => 403,
        }
    }
}

/// Go Micro's `Verify`: whether `account` (or nobody) may use `resource` under `rules`.
///
/// ```
/// use micro_auth::{Denied, Resource, Rule, verify};
///
/// let rules = [
///     Rule::grant("public-health", "", Resource::service("shop", "Debug.Health")),
///     Rule::grant("staff", "staff", Resource::service("shop", "*")),
/// ];
/// assert_eq!(verify(&rules, None, &Resource::service("shop", "Debug.Health")), Ok(()));
/// assert_eq!(verify(&rules, None, &Resource::service("shop", "Orders.List")), Err(Denied::Unauthorized));
/// ```
pub fn verify(
    rules: &[Rule],
    account: Option<&Account>,
    resource: &Resource,
) -> Result<(), Denied> {
    let mut matching: Vec<&Rule> = rules.iter().filter(|r| r.matches(resource)).collect();
    // Stable, as Go's sort.SliceStable.
    matching.sort_by_key(|r| std::cmp::Reverse(r.priority));
    let denied = if account.is_some() {
        Denied::Forbidden
    } else {
        Denied::Unauthorized
    };
    for rule in matching {
        let applies = if rule.scope == SCOPE_PUBLIC {
            true
        } else if let Some(account) = account {
            rule.scope == SCOPE_ACCOUNT || account.scopes.contains(&rule.scope)
        } else {
            false
        };
        if applies {
            return match rule.access {
                Access::Grant => Ok(()),
                Access::Deny => Err(denied),
            };
        }
    }
    Err(denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountType;

    fn account(scopes: &[&str]) -> Account {
        Account {
            id: "ada".into(),
            kind: AccountType::User,
            issuer: "micro".into(),
            metadata: Default::default(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            secret: String::new(),
        }
    }

    fn shop(endpoint: &str) -> Resource {
        Resource::service("shop", endpoint)
    }

    #[test]
    fn nothing_matched_is_forbidden_or_unauthorized() {
        assert_eq!(verify(&[], None, &shop("A.B")), Err(Denied::Unauthorized));
        assert_eq!(
            verify(&[], Some(&account(&["admin"])), &shop("A.B")),
            Err(Denied::Forbidden)
        );
        // A rule about another service does not match.
        let rules = [Rule::grant("r", "", Resource::service("other", "*"))];
        assert_eq!(
            verify(&rules, None, &shop("A.B")),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn public_rules_apply_even_without_an_account() {
        let rules = [Rule::grant("r", SCOPE_PUBLIC, shop("A.B"))];
        assert_eq!(verify(&rules, None, &shop("A.B")), Ok(()));
        assert_eq!(verify(&rules, Some(&account(&[])), &shop("A.B")), Ok(()));
        let rules = [Rule::deny("r", SCOPE_PUBLIC, shop("A.B"))];
        assert_eq!(
            verify(&rules, None, &shop("A.B")),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            verify(&rules, Some(&account(&[])), &shop("A.B")),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn any_account_needs_an_account() {
        let rules = [Rule::grant("r", SCOPE_ACCOUNT, shop("*"))];
        assert_eq!(
            verify(&rules, None, &shop("A.B")),
            Err(Denied::Unauthorized)
        );
        assert_eq!(verify(&rules, Some(&account(&[])), &shop("A.B")), Ok(()));
    }

    #[test]
    fn scoped_rules_need_the_scope() {
        let rules = [Rule::grant("r", "admin", shop("*"))];
        assert_eq!(
            verify(&rules, None, &shop("A.B")),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            verify(&rules, Some(&account(&["user"])), &shop("A.B")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            verify(&rules, Some(&account(&["user", "admin"])), &shop("A.B")),
            Ok(())
        );
    }

    #[test]
    fn a_deny_above_a_lower_grant_wins_and_below_it_loses() {
        let ada = account(&["admin"]);
        let rules = [
            Rule::grant("grant", "admin", shop("*")).priority(1),
            Rule::deny("deny", "admin", shop("Orders.Delete")).priority(2),
        ];
        assert_eq!(
            verify(&rules, Some(&ada), &shop("Orders.Delete")),
            Err(Denied::Forbidden)
        );
        assert_eq!(verify(&rules, Some(&ada), &shop("Orders.List")), Ok(()));
        let rules = [
            Rule::grant("grant", "admin", shop("*")).priority(3),
            Rule::deny("deny", "admin", shop("Orders.Delete")).priority(2),
        ];
        assert_eq!(verify(&rules, Some(&ada), &shop("Orders.Delete")), Ok(()));
    }

    #[test]
    fn equal_priorities_keep_their_order() {
        let ada = account(&["admin"]);
        let rules = [
            Rule::deny("deny", "*", shop("*")),
            Rule::grant("grant", "admin", shop("*")),
        ];
        assert_eq!(
            verify(&rules, Some(&ada), &shop("A.B")),
            Err(Denied::Forbidden)
        );
        let rules = [
            Rule::grant("grant", "admin", shop("*")),
            Rule::deny("deny", "*", shop("*")),
        ];
        assert_eq!(verify(&rules, Some(&ada), &shop("A.B")), Ok(()));
    }

    #[test]
    fn a_rule_that_does_not_apply_to_the_caller_is_skipped() {
        // Higher priority but for another scope: the lower public grant decides.
        let rules = [
            Rule::deny("deny-guests", "guest", shop("*")).priority(10),
            Rule::grant("public", "", shop("*")),
        ];
        assert_eq!(
            verify(&rules, Some(&account(&["staff"])), &shop("A.B")),
            Ok(())
        );
        assert_eq!(
            verify(&rules, Some(&account(&["guest"])), &shop("A.B")),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn wildcards_on_type_name_and_endpoint() {
        let ada = account(&["x"]);
        let rules = [Rule::grant("r", "x", Resource::any())];
        assert_eq!(verify(&rules, Some(&ada), &shop("A.B")), Ok(()));
        assert_eq!(
            verify(
                &rules,
                Some(&ada),
                &Resource::new(TYPE_TOPIC, "orders", "publish")
            ),
            Ok(())
        );
        let rules = [Rule::grant("r", "x", Resource::new("*", "shop", "A.B"))];
        assert_eq!(verify(&rules, Some(&ada), &shop("A.B")), Ok(()));
        assert_eq!(
            verify(&rules, Some(&ada), &shop("A.C")),
            Err(Denied::Forbidden)
        );
        // Case is ignored, as Go's EqualFold.
        let rules = [Rule::grant("r", "x", Resource::service("SHOP", "a.b"))];
        assert_eq!(verify(&rules, Some(&ada), &shop("A.B")), Ok(()));
    }

    #[test]
    fn path_wildcards_as_go_micro() {
        let ada = account(&["x"]);
        let rules = [Rule::grant("r", "x", shop("/foo/*"))];
        assert_eq!(verify(&rules, Some(&ada), &shop("/foo/bar")), Ok(()));
        assert_eq!(verify(&rules, Some(&ada), &shop("/foo/bar/baz")), Ok(()));
        assert_eq!(
            verify(&rules, Some(&ada), &shop("/foobar")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            verify(&rules, Some(&ada), &shop("/other/foo")),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn health_is_public_by_default_until_a_rule_says_otherwise() {
        let health = shop("Debug.Health");
        assert_eq!(verify(&default_rules(), None, &health), Ok(()));
        assert_eq!(
            verify(&default_rules(), None, &shop("Debug.Stats")),
            Err(Denied::Unauthorized)
        );
        let mut rules = vec![Rule::deny("hide", "", health.clone())];
        rules.extend(default_rules());
        assert_eq!(verify(&rules, None, &health), Err(Denied::Unauthorized));
    }

    #[test]
    fn endpoint_prefixes_are_micros_extension() {
        let ada = account(&["x"]);
        let rules = [Rule::grant("r", "x", shop("Inventory.*"))];
        assert_eq!(
            verify(&rules, Some(&ada), &shop("Inventory.Reserve")),
            Ok(())
        );
        assert_eq!(
            verify(&rules, Some(&ada), &shop("InventoryX.Reserve")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            verify(&rules, Some(&ada), &shop("Inventory.")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            verify(&rules, Some(&ada), &shop("Orders.List")),
            Err(Denied::Forbidden)
        );
    }
}
