//! The built-in web console: the pages ([`web`], at `/`) and the JSON API they are built on
//! (`api`, under `/api/v1/`).

pub mod web;
