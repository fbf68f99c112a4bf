//! The dispatcher Lambda: placeholder until the dispatcher issue wires it.
fn main() {}
