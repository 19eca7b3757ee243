//! Event sources: each turns its wire format into [`Event`](crate::event::Event)s
//! and nothing else. No source calls the auditor.

pub mod acr;
pub mod distribution;
pub mod ecr;
pub mod gcr;
pub mod harbor;
pub mod json;
pub mod pubsub_pull;
pub mod pubsub_push;
pub mod push_auth;
pub mod webhook;
