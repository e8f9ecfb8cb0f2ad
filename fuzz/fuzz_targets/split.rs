//! How a target turns fuzzer bytes into a case: the first bytes choose the
//! room and the cut points, the rest is the input.

/// Input cut into chunks, and the output room a transport offers.
#[allow(dead_code)] // not every target uses the room
pub struct Case<'a> {
    pub chunks: Vec<&'a [u8]>,
    pub whole: &'a [u8],
    pub room: usize,
}

/// Byte 0-1: room (1..=65536); byte 2: number of cuts (0..8); then one
/// byte per cut, scaled over the input.
pub fn case(data: &[u8]) -> Option<Case<'_>> {
    let (&[r0, r1, n], rest) = data.split_first_chunk::<3>()?;
    let room = usize::from(u16::from_le_bytes([r0, r1])) + 1;
    let cuts = usize::from(n % 8).min(rest.len());
    let (cut_bytes, whole) = rest.split_at(cuts);
    let mut points: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * whole.len() / 255)
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(&whole[from..p]);
        from = p;
    }
    chunks.push(&whole[from..]);
    Some(Case {
        chunks,
        whole,
        room,
    })
}
