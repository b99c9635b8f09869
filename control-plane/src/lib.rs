//! Strait's control plane: discovers services, checks their health and pushes config to every
//! proxy over Envoy's xDS v3 protocol (ADS), so Strait proxies, Envoy and gRPC's proxyless
//! clients can all follow it.
//!
//! - [`registry`]: the registration API (register, heartbeat, deregister with a TTL).
//! - [`health`]: active health checking (HTTP, gRPC health v1, TCP).
//! - [`endpoints`]: static, registered and DNS endpoints with their health, combined.
//! - [`snapshot`]: every resource, encoded once, versioned by content.
//! - [`xds`]: the ADS server (state of the world, ACK/NACK, make-before-break order).
//! - [`server`]: the running control plane; [`admin`]: its admin API.

pub mod admin;
pub mod endpoints;
pub mod health;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod xds;
