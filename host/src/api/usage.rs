//! `GET /api/usage` — what the model calls used, from the usage ledger
//! (additive): `?from=&to=` (UTC days, both included; by default the 30
//! days up to today), `group_by=principal|session|day` (default `day`),
//! `principal=` (admins: one principal's; a user sees only its own, and
//! naming another is a 403). Rows are per group and model; `cost` is there
//! when `[model] prices` names the model (per million tokens), and in the
//! total when every row has one.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::extract::ApiQuery;
use super::types::Day;
use crate::agent::{UsageGroup, UsageSum};
use crate::config::Price;
use crate::principal::Principal;
use crate::state::AppState;

/// Days a report covers when `from` is not given.
const DEFAULT_DAYS: u64 = 30;
/// The first day a four-digit year can name.
const FIRST_DAY: NaiveDate = NaiveDate::from_ymd_opt(1, 1, 1).expect("a day");

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Principal,
    Session,
    #[default]
    Day,
}

impl From<GroupBy> for UsageGroup {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::Principal => Self::Principal,
            GroupBy::Session => Self::Session,
            GroupBy::Day => Self::Day,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day counted (UTC); by default 29 days before `to`.
    pub from: Option<Day>,
    /// Last day counted (UTC, included); by default today.
    pub to: Option<Day>,
    /// How rows are summed: by `principal`, `session` or `day` (default).
    #[serde(default)]
    pub group_by: GroupBy,
    /// Only this principal's calls (a user may name only itself).
    pub principal: Option<String>,
}

/// What a group's calls of one model used.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UsageRow {
    /// The principal, the session id or the day, as grouped.
    pub key: String,
    pub model: String,
    #[serde(flatten)]
    pub used: UsageTotal,
}

/// Calls and their tokens; `cost` in the operator's currency, where every
/// model counted has a price.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct UsageTotal {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub group_by: GroupBy,
    /// Whose calls: absent for everyone's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub rows: Vec<UsageRow>,
    pub total: UsageTotal,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/api/usage",
        get_with(usage, |op| {
            op.summary("Model tokens used, from the usage ledger")
                .description(
                    "Every model call is recorded with its principal, session, task and \
                     model. `from`/`to`: UTC days, both included (default: the last 30 \
                     days); `group_by`: principal, session or day. Admins see everyone's \
                     (or one `principal`'s); a user only its own (403 for another's). \
                     `cost` where `[model] prices` prices the model.",
                )
                .tag("usage")
        }),
    )
}

async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Principal>>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let principal = match (caller.is_admin(), query.principal) {
        (true, named) => named,
        (false, Some(named)) if named != caller.name => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "A user sees only its own usage",
            ));
        }
        (false, _) => Some(caller.name.clone()),
    };
    let to = query
        .to
        .map_or_else(|| Utc::now().date_naive(), |d| d.date());
    let from = query.from.map_or_else(
        || {
            to.checked_sub_days(Days::new(DEFAULT_DAYS - 1))
                .unwrap_or(FIRST_DAY)
        },
        |d| d.date(),
    );
    let (start, end) = span(from, to);
    let sums = state
        .agent
        .usage(start, end, principal.as_deref(), query.group_by.into())
        .await?;
    let prices = &state.config.model.prices;
    let rows: Vec<UsageRow> = sums
        .into_iter()
        .map(|s| {
            let price = prices.get(&s.model);
            row(s, price)
        })
        .collect();
    let total = total(&rows);
    Ok(Json(UsageReport {
        from: from.to_string(),
        to: to.to_string(),
        group_by: query.group_by,
        principal,
        rows,
        total,
    }))
}

/// The instants from the start of `from` (included) to the end of `to`
/// (excluded), as the ledger compares them: timestamps of four-digit years.
fn span(from: NaiveDate, to: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = match to.succ_opt() {
        Some(next) if next.year() <= 9999 => midnight(next),
        _ => to
            .and_hms_milli_opt(23, 59, 59, 999)
            .expect("the last millisecond")
            .and_utc(),
    };
    (midnight(from.max(FIRST_DAY)), end)
}

fn row(s: UsageSum, price: Option<&Price>) -> UsageRow {
    UsageRow {
        used: UsageTotal {
            cost: price.map(|p| cost(p, s.prompt_tokens, s.completion_tokens)),
            total_tokens: s.prompt_tokens + s.completion_tokens,
            calls: s.calls,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
        },
        key: s.key,
        model: s.model,
    }
}

/// Prices are per million tokens.
fn cost(price: &Price, prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * price.prompt + completion as f64 * price.completion) / 1_000_000.0
}

fn total(rows: &[UsageRow]) -> UsageTotal {
    let mut total = UsageTotal {
        cost: (!rows.is_empty() && rows.iter().all(|r| r.used.cost.is_some())).then_some(0.0),
        ..UsageTotal::default()
    };
    for r in rows.iter().map(|r| &r.used) {
        total.calls += r.calls;
        total.prompt_tokens += r.prompt_tokens;
        total.completion_tokens += r.completion_tokens;
        total.total_tokens += r.total_tokens;
        if let (Some(sum), Some(c)) = (total.cost.as_mut(), r.cost) {
            *sum += c;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(model: &str, prompt: u64, completion: u64) -> UsageSum {
        UsageSum {
            key: "alice".into(),
            model: model.into(),
            calls: 2,
            prompt_tokens: prompt,
            completion_tokens: completion,
        }
    }

    #[test]
    fn costs_are_per_million_tokens_and_totalled_only_when_all_are_priced() {
        let price = Price {
            prompt: 2.0,
            completion: 8.0,
        };
        let priced = row(sum("m", 500_000, 250_000), Some(&price));
        assert_eq!(priced.used.cost, Some(3.0));
        assert_eq!(priced.used.total_tokens, 750_000);
        let t = total(&[priced]);
        assert_eq!((t.calls, t.total_tokens, t.cost), (2, 750_000, Some(3.0)));

        let unpriced = row(sum("other", 10, 5), None);
        let t = total(&[row(sum("m", 1_000_000, 0), Some(&price)), unpriced]);
        assert_eq!(t.cost, None, "a total with an unpriced model has no cost");
        assert_eq!(t.total_tokens, 1_000_015);
        assert_eq!(total(&[]).cost, None);
    }

    #[test]
    fn a_span_covers_whole_days_within_what_the_ledger_can_compare() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let (start, end) = span(day(2026, 12, 1), day(2026, 12, 3));
        assert_eq!(crate::time::timestamp(start), "2026-12-01T00:00:00.000Z");
        assert_eq!(crate::time::timestamp(end), "2026-12-04T00:00:00.000Z");
        let (_, end) = span(day(2026, 1, 1), day(9999, 12, 31));
        assert_eq!(crate::time::timestamp(end), "9999-12-31T23:59:59.999Z");
        let (start, _) = span(NaiveDate::MIN, day(1, 1, 2));
        assert_eq!(crate::time::timestamp(start), "0001-01-01T00:00:00.000Z");
    }
}
