//! The gradual shift (`SwitchPolicy::steps`): refused up front with a router that cannot
//! split, then, between the new color's readiness and the switch, one journaled `shift` step
//! per share below 100%, each watched as the watch after a switch is. The switch that follows
//! is the last step; a failure or an interrupt at any step is restored by the flow, which ends
//! the split (the planner sees it through `Router::current_split`).

use crate::error::{ComponentError, Error};
use crate::events::{Event, Step};
use crate::model::{Color, Instance};
use crate::probe::HealthProbe;
use crate::router::{Router, Split};
use crate::runtime::Runtime;
use crate::state::StateStore;

use super::flow::usage;
use super::run::Run;

/// Refuses `[switch] steps` with a router that cannot split, before anything starts: a
/// deploy that would fail at its first step should not start a release first.
pub(super) fn refuse_unsplittable<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &Run<'_, R, P, T, S>,
) -> Result<(), Error> {
    let eng = run.engine;
    match &eng.config().switch.steps {
        Some(steps) if !eng.router.can_split() => Err(usage(
            run,
            format!(
                "a gradual shift ({steps}) needs a router that can split traffic between two colors, and this router cannot; deploy without steps (remove `[switch] steps` from the config)"
            ),
        )),
        _ => Ok(()),
    }
}

/// The gradual shift before the switch (`[switch] steps`): for each step below 100%, send
/// that share of new requests to `new` (the old color keeps the rest) and watch `new` for
/// `step_wait`, as the watch after a switch does. The switch that follows is the 100% step.
/// An error (a failed split, probe or share of errors, or an interrupt) is returned for the
/// restore, which ends the split: a half-shifted app is not a state to leave behind.
pub(super) async fn shift<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    color: Color,
    old: &Instance,
    new: &Instance,
) -> Result<(), Error> {
    let eng = run.engine;
    let Some(steps) = eng.config().switch.steps.clone() else {
        return Ok(());
    };
    let wait = eng.config().switch.step_wait;
    for percent in steps.splits() {
        let split = Split::new(old.endpoint.clone(), new.endpoint.clone(), percent)
            .map_err(|e| eng.step_error(Step::Shift, color, e))?;
        let during = format!("the {percent}% step of the shift to {color}");
        run.step(Step::Shift, Some(color), true, async {
            eng.router_split(&split).await.map_err(|e| {
                let message = format!(
                    "sending {percent}% of new requests to {color} failed: {}",
                    e.message
                );
                eng.step_error(Step::Shift, color, ComponentError::new(e.kind, message))
            })?;
            eng.emit(Event::Shifted {
                color,
                percent,
                endpoint: new.endpoint.clone(),
            });
            eng.watch_for(new, wait, Step::Shift, &during).await
        })
        .await?;
    }
    Ok(())
}
