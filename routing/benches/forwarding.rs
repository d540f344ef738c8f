//! Forwarding benchmark (filled in below).
fn main() {}
