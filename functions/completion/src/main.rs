//! The completion Lambda: placeholder until the completion issue wires it.
fn main() {}
