//! Randomness from the operating system, through the same crypto library that checks tokens.

/// `N` bytes of fresh OS randomness.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // aws-lc's RNG fails only if the OS cannot supply randomness at all; continuing then would
    // mint guessable credentials, so stopping the process is the only safe answer.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system refused to supply randomness");
    buf
}
