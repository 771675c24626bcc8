//! Chef run-list items: parsing by Chef's own grammar, and the normal form
//! Chef expands them to (`recipe[x]` is `recipe[x::default]`).
//!
//! Chef accepts `recipe[cookbook(::recipe)(@x.y(.z))]`, `role[name]`, and a
//! bare `cookbook(::recipe)(@version)` that means a recipe. Role names are
//! letters, digits, `_` and `-` (so `role[seatgeek::server]` from the seed is
//! not a valid role); cookbook and recipe names are letters, digits, `_`, `-`
//! and `.`.

use std::fmt;

use serde::{Serialize, Serializer};

/// One item of a run list, in normal form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunListItem {
    Recipe { cookbook: String, recipe: String, version: Option<String> },
    Role { name: String },
}

/// Why a run-list item is not one Chef accepts; the `Display` says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunListError {
    #[error("an empty run-list item; write `recipe[cookbook::recipe]` or `role[name]`")]
    Empty,
    #[error("unknown run-list item type `{kind}[...]`; Chef knows only `recipe[...]` and `role[...]`")]
    UnknownKind { kind: String },
    #[error("`{item}` is missing its closing `]`")]
    Unclosed { item: String },
    #[error("invalid role name `{name}`: role names use letters, digits, `_` and `-` only{hint}")]
    RoleName { name: String, hint: &'static str },
    #[error("invalid cookbook name `{name}`: use letters, digits, `_`, `-` and `.`")]
    CookbookName { name: String },
    #[error("invalid recipe name `{name}`: use letters, digits, `_`, `-` and `.`")]
    RecipeName { name: String },
    #[error("invalid version `{version}`: Chef versions are `x.y` or `x.y.z` (digits)")]
    Version { version: String },
}

impl RunListItem {
    pub fn parse(item: &str) -> Result<RunListItem, RunListError> {
        if item.is_empty() {
            return Err(RunListError::Empty);
        }
        if let Some(open) = item.find('[') {
            let kind = &item[..open];
            let Some(inner) = item[open + 1..].strip_suffix(']') else {
                return Err(RunListError::Unclosed { item: item.to_string() });
            };
            return match kind {
                "recipe" => parse_recipe(inner),
                "role" => parse_role(inner),
                _ => Err(RunListError::UnknownKind { kind: kind.to_string() }),
            };
        }
        // Chef reads a bare name as a recipe.
        parse_recipe(item)
    }

    /// The recipe's name when this item is a recipe (`api-workers` for
    /// `recipe[seatgeek-service::api-workers]`).
    pub fn recipe_name(&self) -> Option<&str> {
        match self {
            RunListItem::Recipe { recipe, .. } => Some(recipe),
            RunListItem::Role { .. } => None,
        }
    }
}

fn parse_role(name: &str) -> Result<RunListItem, RunListError> {
    if !is_role_name(name) {
        let hint = if name.contains("::") {
            " (`::` separates a cookbook from a recipe: did you mean `recipe[...]`?)"
        } else {
            ""
        };
        return Err(RunListError::RoleName { name: name.to_string(), hint });
    }
    Ok(RunListItem::Role { name: name.to_string() })
}

fn parse_recipe(inner: &str) -> Result<RunListItem, RunListError> {
    let (name, version) = match inner.split_once('@') {
        Some((name, version)) => {
            if !is_version(version) {
                return Err(RunListError::Version { version: version.to_string() });
            }
            (name, Some(version.to_string()))
        }
        None => (inner, None),
    };
    let (cookbook, recipe) = match name.split_once("::") {
        Some((cookbook, recipe)) => (cookbook, recipe),
        None => (name, "default"),
    };
    if !is_cookbook_name(cookbook) {
        return Err(RunListError::CookbookName { name: cookbook.to_string() });
    }
    if !is_cookbook_name(recipe) {
        return Err(RunListError::RecipeName { name: recipe.to_string() });
    }
    Ok(RunListItem::Recipe { cookbook: cookbook.to_string(), recipe: recipe.to_string(), version })
}

/// Role (and node group) names: Chef's role-name grammar.
pub fn is_role_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_cookbook_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

impl fmt::Display for RunListItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunListItem::Recipe { cookbook, recipe, version: None } => {
                write!(f, "recipe[{cookbook}::{recipe}]")
            }
            RunListItem::Recipe { cookbook, recipe, version: Some(v) } => {
                write!(f, "recipe[{cookbook}::{recipe}@{v}]")
            }
            RunListItem::Role { name } => write!(f, "role[{name}]"),
        }
    }
}

impl Serialize for RunListItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(input: &str, expect: Expect) {
        let actual = match RunListItem::parse(input) {
            Ok(item) => item.to_string(),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn normal_forms() {
        check("recipe[sudo]", expect!["recipe[sudo::default]"]);
        check("recipe[seatgeek::base-server]", expect!["recipe[seatgeek::base-server]"]);
        check("nginx::default", expect!["recipe[nginx::default]"]);
        check("php", expect!["recipe[php::default]"]);
        check("recipe[app@1.2.3]", expect!["recipe[app::default@1.2.3]"]);
        check("recipe[app::web@1.2]", expect!["recipe[app::web@1.2]"]);
        check("role[web_server-2]", expect!["role[web_server-2]"]);
    }

    #[test]
    fn rejected_items() {
        check("", expect!["error: an empty run-list item; write `recipe[cookbook::recipe]` or `role[name]`"]);
        check(
            "role[seatgeek::server]",
            expect![
                "error: invalid role name `seatgeek::server`: role names use letters, digits, `_` and `-` only (`::` separates a cookbook from a recipe: did you mean `recipe[...]`?)"
            ],
        );
        check("recipe[]", expect!["error: invalid cookbook name ``: use letters, digits, `_`, `-` and `.`"]);
        check("recipe[a::]", expect!["error: invalid recipe name ``: use letters, digits, `_`, `-` and `.`"]);
        check("recipe[a::b::c]", expect!["error: invalid recipe name `b::c`: use letters, digits, `_`, `-` and `.`"]);
        check("recipe[a@1]", expect!["error: invalid version `1`: Chef versions are `x.y` or `x.y.z` (digits)"]);
        check("recipe[a", expect!["error: `recipe[a` is missing its closing `]`"]);
        check(
            "cookbook[a]",
            expect!["error: unknown run-list item type `cookbook[...]`; Chef knows only `recipe[...]` and `role[...]`"],
        );
        check("recipe[a b]", expect!["error: invalid cookbook name `a b`: use letters, digits, `_`, `-` and `.`"]);
    }
}
