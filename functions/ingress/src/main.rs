//! The ingress Lambda: placeholder until the ingress issue wires it.
fn main() {}
