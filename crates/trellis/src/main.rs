#[allow(dead_code)] // until the CLI wires `trellis echo`
mod echo;

fn main() {}
