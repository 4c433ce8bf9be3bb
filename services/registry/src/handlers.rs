//! The request endpoints. Each handler decodes once and returns
//! `Result<T, ShoalError>`; `shoal_runtime::serve` encodes the reply.

use async_nats::Message;
use chrono::Utc;
use shoal_protocol::{
    Empty, ListNodesRequest, Node, NodeChangeReply, NodeEventKind, NodeIdRequest, NodeList,
    NodeStatus, RegisterNodeRequest, RegistryStats, ShoalError, decode, size,
};

use crate::engine::Engine;
use crate::member::Change;
use crate::model;

/// A page of the nodes matching the filter: as many as `limit` asks and one NATS
/// message carries; `next` says where the next page starts.
pub fn list(engine: &Engine, msg: &Message) -> Result<NodeList, ShoalError> {
    let filter: ListNodesRequest = decode(&msg.payload)?;
    let (mut nodes, mut next) = engine.lock().list(&filter);
    let budget = size::budget(engine.client.server_info().max_payload);
    size::fit_page(&mut nodes, &mut next, budget, |n| n.id.clone())?;
    Ok(NodeList {
        count: nodes.len(),
        nodes,
        next,
    })
}

pub fn get(engine: &Engine, msg: &Message) -> Result<Node, ShoalError> {
    let req: NodeIdRequest = decode(&msg.payload)?;
    engine
        .lock()
        .served(&req.id)
        .ok_or_else(|| ShoalError::no_node(&req.id))
}

pub fn stats(engine: &Engine, msg: &Message) -> Result<RegistryStats, ShoalError> {
    let _: Empty = decode(&msg.payload)?;
    Ok(engine.lock().stats(engine.rejected()))
}

pub async fn register(engine: &Engine, msg: &Message) -> Result<NodeChangeReply, ShoalError> {
    let req: RegisterNodeRequest = decode(&msg.payload)?;
    let node = engine
        .mutate(&req.id, |current| {
            let new = model::from_registration(&req, current, Utc::now());
            Ok(match current {
                None => Some((new, change(NodeEventKind::Joined, None, "registered"))),
                Some(old) if *old == new => None,
                Some(old) => Some((
                    new,
                    change(
                        NodeEventKind::Updated,
                        Some(old.status),
                        "registration updated",
                    ),
                )),
            })
        })
        .await?;
    Ok(NodeChangeReply {
        success: true,
        node: Some(node),
    })
}

pub async fn unregister(engine: &Engine, msg: &Message) -> Result<NodeChangeReply, ShoalError> {
    let req: NodeIdRequest = decode(&msg.payload)?;
    let node = engine.remove(&req.id).await?;
    Ok(NodeChangeReply {
        success: true,
        node: Some(node),
    })
}

pub async fn drain(engine: &Engine, msg: &Message) -> Result<Node, ShoalError> {
    let req: NodeIdRequest = decode(&msg.payload)?;
    engine
        .mutate(&req.id, |current| {
            let node = current.ok_or_else(|| ShoalError::no_node(&req.id))?;
            if node.draining {
                return Ok(None);
            }
            let mut new = node.clone();
            new.draining = true;
            if new.status == NodeStatus::Online {
                model::set_status(&mut new, NodeStatus::Draining);
            }
            Ok(Some((
                new,
                change(
                    NodeEventKind::Draining,
                    Some(node.status),
                    "drain requested",
                ),
            )))
        })
        .await
}

pub async fn undrain(engine: &Engine, msg: &Message) -> Result<Node, ShoalError> {
    let req: NodeIdRequest = decode(&msg.payload)?;
    engine
        .mutate(&req.id, |current| {
            let node = current.ok_or_else(|| ShoalError::no_node(&req.id))?;
            if !node.draining {
                return Ok(None);
            }
            let mut new = node.clone();
            new.draining = false;
            if new.status == NodeStatus::Draining {
                model::set_status(&mut new, NodeStatus::Online);
            }
            Ok(Some((
                new,
                change(
                    NodeEventKind::Undrained,
                    Some(node.status),
                    "undrain requested",
                ),
            )))
        })
        .await
}

fn change(kind: NodeEventKind, previous: Option<NodeStatus>, reason: &str) -> Change {
    Change {
        kind,
        previous,
        reason: Some(reason.to_string()),
    }
}
