//! `acl:token:create|list|revoke` and `acl:policy:create|list|show`: tokens
//! and policies on the server. A token's secret is printed once, when it is
//! created (or written to a 0600 file with `--secret-file`), never again.

use std::path::Path;

use anyhow::Context as _;
use gantry_api::{Policy, Token, TokenRequest};
use serde::Serialize;

use crate::BadInput;
use crate::context::{Context, explain};

pub fn token_create(ctx: &Context, request: &TokenRequest, secret_file: Option<&Path>) -> anyhow::Result<()> {
    if request.policies.is_empty() && request.agent.is_none() {
        return Err(BadInput(
            "error: a token needs --policy NAME (repeatable) or --agent MACHINE\n = help: `gantry acl:policy:list` shows the policies; `management` is everything".into(),
        )
        .into());
    }
    let created = ctx.block_on(ctx.client().create_token(request)).map_err(explain)?;
    if let Some(path) = secret_file {
        gantry_tls::write_private(path, format!("{}\n", created.secret).as_bytes())
            .with_context(|| format!("writing the secret to {}", path.display()))?;
        #[derive(Serialize)]
        struct Written<'a> {
            token: &'a Token,
            secret_file: &'a Path,
        }
        return ctx.output().print(&Written { token: &created.token, secret_file: path }, |out| {
            writeln!(out, "accessor {}", created.token.accessor)?;
            writeln!(out, "secret   written to {} (mode 0600)", path.display())?;
            Ok(())
        });
    }
    ctx.output().print(&created, |out| {
        writeln!(out, "accessor {}", created.token.accessor)?;
        writeln!(out, "secret   {}", created.secret)?;
        writeln!(out, "(the secret is shown this once: keep it, e.g. in GANTRY_TOKEN_FILE)")?;
        Ok(())
    })
}

pub fn token_list(ctx: &Context) -> anyhow::Result<()> {
    let tokens = ctx.block_on(ctx.client().tokens()).map_err(explain)?;
    ctx.output().listing(
        &tokens,
        |t| t,
        &["ACCESSOR", "NAME", "GRANTS", "EXPIRES"],
        |t| {
            let grants = match &t.agent {
                Some(agent) => format!("agent of {} ({})", agent.machine, agent.federation),
                None => t.policies.join(","),
            };
            let expires = t.expires_at_ms.map_or("never".to_owned(), |ms| {
                let now = gantry_api::now_ms();
                if ms <= now {
                    "expired".to_owned()
                } else {
                    format!("in {}", humantime::format_duration(std::time::Duration::from_secs((ms - now) / 1000)))
                }
            });
            vec![t.accessor.clone(), t.name.clone(), grants, expires]
        },
        "no tokens",
    )
}

pub fn token_revoke(ctx: &Context, accessor: &str) -> anyhow::Result<()> {
    let revoked = ctx.block_on(ctx.client().revoke_token(accessor)).map_err(explain)?;
    if revoked.deleted == 0 {
        return Err(BadInput(format!(
            "error: no token {accessor:?}\n = help: `gantry acl:token:list` shows the tokens' accessors"
        ))
        .into());
    }
    ctx.output().print(&revoked, |out| {
        writeln!(out, "revoked {accessor}")?;
        Ok(())
    })
}

pub fn policy_create(ctx: &Context, policy: Policy, file: Option<&Path>) -> anyhow::Result<()> {
    let policy = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BadInput(format!("error: cannot read {}: {e}", path.display())))?;
            let mut from_file: Policy = serde_json::from_str(&text)
                .map_err(|e| BadInput(format!("error: {}: {e}\n = help: write {{\"name\": \"...\", \"rules\": [{{\"prefix\": \"kv/app/\", \"access\": \"write\"}}]}}", path.display())))?;
            if from_file.name.is_empty() {
                from_file.name = policy.name;
            } else if from_file.name != policy.name {
                return Err(BadInput(format!(
                    "error: {} names policy {:?}, the command line {:?}",
                    path.display(),
                    from_file.name,
                    policy.name
                ))
                .into());
            }
            from_file
        }
        None => policy,
    };
    if policy.rules.is_empty() {
        return Err(BadInput(
            "error: a policy needs rules\n = help: --read PREFIX, --write PREFIX or --deny PREFIX (repeatable), or --file POLICY.json".into(),
        )
        .into());
    }
    let written = ctx.block_on(ctx.client().put_policy(&policy)).map_err(explain)?;
    ctx.output().print(&written, |out| {
        writeln!(out, "policy {} written ({} rule(s))", policy.name, policy.rules.len())?;
        Ok(())
    })
}

pub fn policy_list(ctx: &Context) -> anyhow::Result<()> {
    let policies = ctx.block_on(ctx.client().policies()).map_err(explain)?.items;
    ctx.output().listing(
        &policies,
        |p| p,
        &["POLICY", "RULES", "FEDERATIONS", "DESCRIPTION"],
        |p| {
            let rules: Vec<String> = p.rules.iter().map(|r| format!("{} {:?}", r.access.as_str(), r.prefix)).collect();
            let federations = if p.federations.is_empty() { "all".to_owned() } else { p.federations.join(",") };
            vec![p.name.clone(), rules.join(", "), federations, p.description.clone()]
        },
        "no policies (the built-in `management` is everything)",
    )
}

pub fn policy_show(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let Some(policy) = ctx.block_on(ctx.client().policy(name)).map_err(explain)? else {
        return Err(BadInput(format!(
            "error: no policy {name:?}\n = help: `gantry acl:policy:list` shows them (`management` is built in: everything)"
        ))
        .into());
    };
    ctx.output().print(&policy, |out| {
        writeln!(
            out,
            "policy {}{}",
            policy.name,
            if policy.description.is_empty() { String::new() } else { format!(": {}", policy.description) }
        )?;
        for rule in &policy.rules {
            writeln!(out, "  {:<5} {:?}", rule.access.as_str(), rule.prefix)?;
        }
        if !policy.federations.is_empty() {
            writeln!(out, "  federations: {}", policy.federations.join(", "))?;
        }
        Ok(())
    })
}
