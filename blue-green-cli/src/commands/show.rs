//! `status`, `repair` and `history` for people.

use std::fmt::Write as _;

use blue_green_core::state::short_time;
use blue_green_core::{Color, FileStore, RepairReport, StateStore, Status};
use serde_json::json;

use crate::config::Config;
use crate::failure::Failure;
use crate::output::{one_line, secs, Printer};

/// `unserved`: why nginx does not serve the upstream file the live color was read from, when
/// it does not (then no color is marked LIVE: no request reaches it through nginx).
pub(super) fn status_text(s: &Status, unserved: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "app      {}", s.app);
    if let (Some(color), Some(why)) = (&s.live, unserved) {
        let _ = writeln!(
            out,
            "live     none that nginx serves: the upstream file routes to {color}, but {}",
            one_line(why)
        );
    }
    match (&s.live, &s.deployment) {
        _ if unserved.is_some() && s.live.is_some() => {}
        (Some(color), Some(d)) if d.color == *color => {
            let _ = writeln!(
                out,
                "live     {color}, release {} since {}",
                d.release.id,
                short_time(d.since)
            );
        }
        (Some(color), _) => {
            let _ = writeln!(out, "live     {color} (no deploy of it is recorded)");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "live     none (nothing deployed yet: run `blue-green deploy`)"
            );
        }
    }
    let target = s
        .router_target
        .as_ref()
        .map_or("nowhere".to_string(), ToString::to_string);
    let _ = writeln!(out, "router   -> {target}");
    if let Some(staged) = &s.staged {
        let preview = s
            .staged_preview
            .as_ref()
            .map(|p| format!(" (preview: {})", one_line(p)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "staged   {}, release {} at {}{preview} since {}: `blue-green promote` switches to it, `blue-green abort` removes it",
            staged.color,
            staged.release.id,
            staged.endpoint,
            short_time(staged.since)
        );
    }
    if s.instances.is_empty() {
        let _ = writeln!(out, "instances: none");
    } else {
        let _ = writeln!(out, "instances:");
        for i in &s.instances {
            let is_staged = s
                .staged
                .as_ref()
                .is_some_and(|d| d.color == i.instance.color && d.release.id == i.instance.release);
            let live = match (i.live, unserved) {
                (true, None) => "  LIVE",
                (true, Some(_)) => "  ROUTED IN THE FILE ONLY",
                (false, _) if is_staged => "  STAGED",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {:<6} release {:<16} {:<22} {:<20} {}{live}",
                i.instance.color,
                one_line(&i.instance.release),
                i.instance.endpoint.to_string(),
                one_line(&i.state.to_string()),
                one_line(short_id(&i.instance.id)),
            );
        }
    }
    if let Some(holder) = &s.in_progress {
        let _ = writeln!(out, "at work  {holder}");
    }
    if !s.leftovers.is_empty() {
        let _ = writeln!(out, "left over:");
        for left in &s.leftovers {
            let _ = writeln!(out, "  {}", left.found);
            for action in &left.repair {
                let _ = writeln!(out, "    - {action}");
            }
        }
        let _ = writeln!(
            out,
            "run `blue-green repair` to repair it (the next deploy, rollback, switch or down also does)"
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {}", one_line(w));
    }
    out
}

/// The summary line of `repair` (what it repaired was shown as it happened).
pub(super) fn repair_text(r: &RepairReport) -> String {
    let live = r
        .live
        .map_or("nothing is live".to_string(), |c| format!("{c} is live"));
    match r.repaired.len() {
        0 => format!("nothing to repair; {live}"),
        1 => format!("repaired 1 leftover; {live}"),
        n => format!("repaired {n} leftovers; {live}"),
    }
}

/// A Docker container id shortened as `docker ps` does; other ids as they are.
fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

pub(super) async fn history(
    config: &Config,
    limit: Option<usize>,
    printer: Printer,
) -> Result<(), Failure> {
    // History needs only the state directory: it works while Docker or nginx are down.
    let store = FileStore::new(config.state_dir.clone());
    // With `-n`, only the end of the file is read.
    let records = match limit {
        Some(n) => store.recent_history(n).await,
        None => store.history().await,
    }
    .map_err(Failure::Component)?;
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no deploys recorded yet\n");
    } else {
        let _ = writeln!(
            out,
            "{:<20}  {:<8} {:<16} {:<14} {:<12} {:>7}  STEPS",
            "STARTED", "COMMAND", "RELEASE", "FROM -> TO", "OUTCOME", "TIME"
        );
    }
    for r in &records {
        let total: u64 = r.steps.iter().map(|s| s.ms).sum();
        let color = |c: Option<Color>| c.map_or("-".to_string(), |c| c.to_string());
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| format!("{}{} {}", s.step, if s.ok { "" } else { "!" }, secs(s.ms)))
            .collect();
        let _ = writeln!(
            out,
            "{:<20}  {:<8} {:<16} {:<14} {:<12} {:>7}  {}",
            short_time(r.started_at),
            r.command,
            one_line(r.release.as_deref().unwrap_or("-")),
            format!("{} -> {}", color(r.from), color(r.to)),
            format!("{:?}", r.outcome).to_lowercase(),
            secs(total),
            steps.join(", "),
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:<22}error: {}", "", one_line(e));
        }
        for w in &r.warnings {
            let _ = writeln!(out, "{:<22}warning: {}", "", one_line(w));
        }
    }
    printer.success("history", json!({ "history": records }), &out, true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        assert_eq!(short_id(&"a".repeat(64)), "aaaaaaaaaaaa");
        assert_eq!(short_id("web-blue"), "web-blue");
    }
}
