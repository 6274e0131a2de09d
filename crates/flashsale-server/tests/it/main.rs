//! The server's tests, one binary with a module per area, against real PostgreSQL (a database
//! per test, `#[sqlx::test]`) and Redis (a key space per test, cleaned when the test ends).

mod admin_auth;
mod cluster;
mod codes;
mod common;
mod draw;
mod faults;
mod ops;
mod orders;
mod pow;
mod queue;
mod report;
mod sales;
mod validation;
mod web;
