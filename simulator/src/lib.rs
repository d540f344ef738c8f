//! lifeline's simulator: the real routing state machines on thousands of
//! virtual nodes, with real signatures and encryption and in-memory stores,
//! on simulated links, deterministically.
//!
//! - [`topology`]: generators and loaders for real topologies;
//! - [`chain`]: the PoA chain on every node;
//! - [`engine`]: the discrete-event engine that drives `lifeline_routing::Router`;
//! - [`scenario`]: scenario files (TOML);
//! - [`run`](mod@run): running a scenario;
//! - [`report`]: what a run reports;
//! - [`html`]: the HTML report with SVG charts.

pub mod chain;
pub mod engine;
pub mod html;
pub mod mobility;
pub mod report;
pub mod run;
pub mod scenario;
pub mod topology;

use lifeline_routing::Class;

/// The class named `P0` ... `P3`.
pub fn class_of(name: &str) -> Option<Class> {
    match name.trim().to_ascii_uppercase().as_str() {
        "P0" => Some(Class::P0),
        "P1" => Some(Class::P1),
        "P2" => Some(Class::P2),
        "P3" => Some(Class::P3),
        _ => None,
    }
}

/// The name of a class.
pub fn class_name(class: Class) -> &'static str {
    match class {
        Class::P0 => "P0",
        Class::P1 => "P1",
        Class::P2 => "P2",
        Class::P3 => "P3",
    }
}
