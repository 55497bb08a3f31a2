//! The built-in web console: the pages ([`web`], at `/`) and the JSON API they are built on
//! ([`api`], under `/api/v1/`).
//!
//! The console never has its own rules: every action goes through the same broker code paths
//! the Kafka handlers use, so an operator sees and does exactly what a Kafka client would.

pub mod api;
pub mod web;
