//! The queue's tests, one binary with a module per area, against a real Redis (a key space per
//! test, cleaned when the test ends).

mod queue;
mod stats;
