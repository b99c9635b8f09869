//! The `strait-cp` command.

fn main() {
    println!("strait-cp: not yet");
}
