//! A node that lost touch with the cluster sends its people elsewhere, then
//! comes back.
//!
//! Every node holds a presence lease (`node-<holder>`, [`ClusterNode::presence_lease`])
//! for as long as it runs. When it runs out — NATS unreachable from this node for
//! a lease's time, or the process paused past it — the other nodes take it that
//! this node is gone: owners let go of its connections' proxies
//! ([`super::remote::sweep`]), so a member connected here would no longer be sent
//! a group's events, and its groups' leases ran out with it. Serving on would
//! leave those people in groups that have gone quiet, and their calls for help
//! could not be made durable here.
//!
//! So the moment the presence lease is lost, this node says it is out of touch
//! ([`ClusterNode::is_in_touch`]):
//! - every connection that is in a group (or a staff line) ends with close 1013
//!   (try again later: the client reconnects, to another node if it knows one or
//!   through a load balancer, and resumes with `after`);
//! - a connection in no group stays, and new ones are still taken: when every
//!   node is cut off (NATS down) a flag must still be answered with the
//!   helplines, as it is without a cluster;
//! - no group is taken or reached through this node (a join is refused as
//!   retryable, `storage_unavailable`), and `/readyz` answers 503 so that a load
//!   balancer sends people to a node that is in touch;
//! - the node takes its presence lease again, retrying until NATS answers and
//!   the old deadline has passed. Once it holds it again it serves as before;
//!   the owners see it present and keep the proxies of its new connections.

use std::sync::Arc;
use std::time::Duration;

use super::lease::LeaseState;
use super::node::ClusterNode;
use crate::hub::Hub;

/// The reason a connection is closed with when its node lost touch.
pub const CLOSE_REASON: &str = "this node lost touch with the cluster; reconnect and resume";

/// Watches this node's presence lease until the hub stops: on its loss, marks
/// the node out of touch (which ends every connection) and takes the lease
/// again.
pub async fn keep(node: Arc<ClusterNode>, hub: Arc<Hub>) {
    let stop = hub.shutdown.clone();
    loop {
        let Some(mut state) = node.presence_state() else {
            return; // The node left (a clean stop).
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = state.wait_for(|s| matches!(s, LeaseState::Lost { .. })) => {}
        }
        node.set_in_touch(false);
        tracing::warn!(
            node = %node.holder,
            "this node lost its presence in the cluster (NATS unreachable, or the process paused, for a lease's time): its connections are closed so that they reconnect and resume; taking the presence lease again"
        );
        let Some(keeper) = take_again(&node, &stop).await else {
            return;
        };
        if !node.replace_presence(keeper).await {
            return;
        }
        node.set_in_touch(true);
        tracing::info!(node = %node.holder, "this node is in touch with the cluster again");
    }
}

/// Takes the presence lease again, retrying until it is taken or the hub stops.
async fn take_again(
    node: &ClusterNode,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<super::lease::LeaseKeeper> {
    let key = ClusterNode::presence_lease(&node.holder);
    let retry = (node.settings.lease_ttl / 10).max(Duration::from_millis(100));
    loop {
        let taken = tokio::select! {
            () = stop.cancelled() => return None,
            taken = node.leases.acquire(&key, &node.holder) => taken,
        };
        match taken {
            Ok(lease) => return Some(node.leases.keep(lease)),
            Err(error) => tracing::debug!(%error, "presence lease not taken yet; trying again"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// Resolves each time the node behind `touch` turns out of touch with the
/// cluster; never on one node (`None`). Cancel-safe: a change not yet
/// resolved here is seen at the next call.
pub async fn lost(touch: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(watch) = touch else {
        return std::future::pending().await;
    };
    loop {
        if watch.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !*watch.borrow_and_update() {
            return;
        }
    }
}
