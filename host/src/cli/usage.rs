//! `crogia token new`: a fresh token and the `[[auth.users]]` entry for
//! it; `crogia usage`: what the model calls used, from the server's ledger.

use anyhow::bail;
use serde_json::json;

use super::{ApiClient, print_json};
use crate::api::UsageReport;
use crate::principal::{new_token, token_sha256, valid_name};

/// Prints a new token for `name` and the entry that gives it `role`; the
/// token is shown once and stored nowhere.
pub fn token_new(name: &str, role: &str, json_out: bool) -> anyhow::Result<i32> {
    if !valid_name(name) {
        bail!("{name:?} is not a principal name: 1 to 64 letters, digits, '-', '_' or '.'");
    }
    let token = new_token();
    let hash = token_sha256(&token);
    if json_out {
        print_json(&json!({"name": name, "role": role, "token": token, "token_sha256": hash}));
        return Ok(0);
    }
    eprintln!("Token for {name} (shown once; give it to {name}, keep only its hash):");
    println!("{token}");
    eprintln!("\nAdd this to the server's config ([auth] section) and restart it:");
    println!("\n[[auth.users]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nrole = \"{role}\"");
    Ok(0)
}

/// What the filters select, as a table (or the report as JSON).
pub async fn usage(
    c: &ApiClient,
    from: Option<&str>,
    to: Option<&str>,
    group_by: &str,
    principal: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let mut query = vec![("group_by", group_by)];
    query.extend(from.map(|f| ("from", f)));
    query.extend(to.map(|t| ("to", t)));
    query.extend(principal.map(|p| ("principal", p)));
    let query = serde_urlencoded::to_string(&query)?;
    let (report, json) = c
        .fetch::<UsageReport>(reqwest::Method::GET, &format!("/api/usage?{query}"), None)
        .await?;
    if json_out {
        print_json(&json);
        return Ok(0);
    }
    let cost = |c: Option<f64>| c.map_or_else(String::new, |c| format!("{c:.4}"));
    println!(
        "Usage {} to {}{}",
        report.from,
        report.to,
        report
            .principal
            .as_deref()
            .map_or_else(String::new, |p| format!(" of {p}"))
    );
    println!(
        "{:<26}{:<20}{:>7}{:>13}{:>13}{:>13}{:>11}",
        group_by.to_uppercase(),
        "MODEL",
        "CALLS",
        "PROMPT",
        "COMPLETION",
        "TOTAL",
        "COST"
    );
    for r in &report.rows {
        println!(
            "{:<26}{:<20}{:>7}{:>13}{:>13}{:>13}{:>11}",
            r.key,
            r.model,
            r.used.calls,
            r.used.prompt_tokens,
            r.used.completion_tokens,
            r.used.total_tokens,
            cost(r.used.cost)
        );
    }
    let t = &report.total;
    println!(
        "{:<46}{:>7}{:>13}{:>13}{:>13}{:>11}",
        "TOTAL",
        t.calls,
        t.prompt_tokens,
        t.completion_tokens,
        t.total_tokens,
        cost(t.cost)
    );
    Ok(0)
}
