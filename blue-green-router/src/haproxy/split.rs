//! The gradual shift through HAProxy: a split's weights (the live slot's odd, the new one's
//! even, so HAProxy's own state says which is which), reading a split back, and the response
//! counters the watch compares.

use blue_green_core::{ComponentError, Endpoint, Responses, RouteReceipt, Split};

use super::servers::{self, Admin, Server};
use super::{describe, HaproxyRouter};
use crate::validate::{self, Host};

impl HaproxyRouter {
    /// [`Router::split`](blue_green_core::Router::split): the live slot must point at the
    /// split's current; the other slot is pointed at its next, and both get the split's
    /// weights and are made ready. On error, the slots are put back as they were.
    pub(super) async fn apply_split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        let ip_of = |endpoint: &Endpoint| {
            match validate::endpoint("HAProxy", endpoint)? {
            Host::Ip(ip) => Ok(ip),
            Host::Name(name) => Err(ComponentError::invalid(format!(
                "cannot split HAProxy's traffic to `{endpoint}`: its runtime API sets a server's address as an IP address, and `{name}` is a name; give the endpoint as an IP address"
            ))),
        }
        };
        ip_of(split.current())?;
        let next_ip = ip_of(split.next())?;
        let _changing = self.changing.lock().await;
        let before = self.servers().await?;
        let Some(current) =
            (0..2).find(|&i| before[i].serving() && before[i].points_at_endpoint(split.current()))
        else {
            return Err(ComponentError::failed(format!(
                "cannot split HAProxy's backend `{}`: it does not route to {} now (`{}` is at {}, `{}` at {}); route there first",
                self.backend(),
                split.current(),
                before[0].name,
                describe(&before[0]),
                before[1].name,
                describe(&before[1])
            )));
        };
        let next = 1 - current;
        let (current_weight, next_weight) = split_weights(split.percent());
        let mut touched = vec![current, next];
        let result = async {
            if !before[next].points_at(next_ip, split.next().port) {
                self.set_addr(next, next_ip, split.next().port).await?;
            }
            // The live slot's weight first: never a moment with the new slot at full weight.
            self.set_weight(current, current_weight).await?;
            self.set_weight(next, next_weight).await?;
            self.set_state(next, Admin::Ready).await?;
            self.save_server_state().await
        }
        .await;
        let Err(error) = result else {
            return Ok(RouteReceipt::new());
        };
        touched.dedup();
        let undone = match self.undo(&before, &touched).await {
            Ok(()) => "the servers were put back as they were".to_string(),
            Err(why) => format!(
                "putting the servers back failed too ({why}): check `show servers state {}`",
                self.backend()
            ),
        };
        Err(ComponentError::new(
            error.kind,
            format!(
                "splitting HAProxy's backend `{}` ({}% to {}) failed: {}; {undone}",
                self.backend(),
                split.percent(),
                split.next(),
                error.message
            ),
        ))
    }

    /// The split HAProxy holds now, if any.
    pub(super) async fn read_current_split(&self) -> Result<Option<Split>, ComponentError> {
        let servers = self.servers().await?;
        let Some((current, next, percent)) = Self::read_split(&servers) else {
            return Ok(None);
        };
        match (servers[current].endpoint(), servers[next].endpoint()) {
            (Some(c), Some(n)) => Split::new(c, n, percent).map(Some),
            _ => Ok(None),
        }
    }

    /// The `hrsp_*` counters of the slots pointing at `endpoint`: since HAProxy started (a
    /// slot keeps counting when it is pointed elsewhere; the watch compares two readings).
    pub(super) async fn count_responses(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Responses, ComponentError> {
        let servers = self.servers().await?;
        let slots = Self::slots_at(&servers, endpoint);
        let command = format!("show stat {} 4 -1", self.backend());
        let answer = self.api.send(&command).await?;
        let counted = servers::parse_responses(&answer).map_err(|why| {
            ComponentError::failed(format!("HAProxy's answer to `{command}` {why}"))
        })?;
        let mut responses = Responses::default();
        for slot in slots {
            if let Some(&(total, errors)) = counted.get(&servers[slot].name) {
                responses.total += total;
                responses.errors += errors;
            }
        }
        Ok(responses)
    }

    /// The split the two slots hold, as `(current slot, next slot, percent)`: both serving,
    /// the next one with an even weight `2p` (p from 1 to 99), the current one with exactly
    /// `2(100 - p) + 1`. Weights set any other way (by hand, [`HaproxyRouter::set_weights`])
    /// are no split of the router's.
    pub(super) fn read_split(servers: &[Server; 2]) -> Option<(usize, usize, u8)> {
        if !servers.iter().all(Server::serving) {
            return None;
        }
        [(0, 1), (1, 0)].into_iter().find_map(|(current, next)| {
            let w = servers[next].weight;
            let percent = u8::try_from(w / 2).ok().filter(|p| (1..=99).contains(p))?;
            let (want_current, _) = split_weights(percent);
            (w % 2 == 0 && servers[current].weight == want_current)
                .then_some((current, next, percent))
        })
    }
}

/// The weights of a split's current and next slot for `percent` (see the module's docs).
pub(super) fn split_weights(percent: u8) -> (u32, u32) {
    let p = u32::from(percent);
    (2 * (100 - p) + 1, 2 * p)
}
