//! Strait's control plane: discovers services, checks their health and pushes config to every
//! proxy over Envoy's xDS v3 protocol (ADS), so Strait proxies, Envoy and gRPC's proxyless
//! clients can all follow it.
//!
//! - [`registry`]: the registration API (register, heartbeat, deregister with a TTL).
//! - [`health`]: active health checking (HTTP, gRPC health v1, TCP).

pub mod health;
pub mod registry;
