//! Output of a command, capped: the start says what it was doing, the end
//! how it finished, and a marker line says how much was dropped between.

use std::collections::VecDeque;

/// Start of the line that replaces dropped output.
pub const TRUNCATION_MARKER: &str = "[... crogia: output truncated,";

/// Keeps the first and last halves of at most `limit` bytes of a stream and
/// counts what it drops in between: the start of a command's output says what
/// it was doing, the end says how it finished.
#[derive(Debug)]
pub struct CappedBuffer {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CappedBuffer {
    pub fn new(limit: usize) -> Self {
        let head_cap = limit / 2;
        Self {
            head_cap,
            tail_cap: limit - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        if self.head.len() < self.head_cap {
            let take = (self.head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if data.len() >= self.tail_cap {
            self.dropped += (self.tail.len() + data.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
            return;
        }
        self.tail.extend(data);
        if self.tail.len() > self.tail_cap {
            let excess = self.tail.len() - self.tail_cap;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The kept text (invalid UTF-8 replaced) and whether anything was dropped.
    pub fn finish(self) -> (String, bool) {
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(self.tail.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        if self.dropped == 0 {
            let mut all = self.head;
            all.extend_from_slice(&tail);
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
        let text = format!(
            "{}\n{TRUNCATION_MARKER} {} bytes omitted ...]\n{}",
            String::from_utf8_lossy(&self.head),
            self.dropped,
            String::from_utf8_lossy(&tail)
        );
        (text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut b = CappedBuffer::new(10);
        b.push(b"abc");
        b.push(b"def");
        assert_eq!(b.finish(), ("abcdef".to_string(), false));
    }

    #[test]
    fn large_output_keeps_head_and_tail_with_a_marker() {
        let mut b = CappedBuffer::new(10);
        for chunk in [&b"0123"[..], b"456789", b"abcdefgh", b"XYZ"] {
            b.push(chunk);
        }
        let (text, cut) = b.finish();
        assert!(cut);
        assert!(text.starts_with("01234\n"), "{text}");
        assert!(text.ends_with("...]\nghXYZ"), "{text}");
        assert!(
            text.contains(&format!("{TRUNCATION_MARKER} 11 bytes omitted")),
            "{text}"
        );
    }

    #[test]
    fn one_huge_chunk_is_capped() {
        let mut b = CappedBuffer::new(100);
        b.push(&vec![b'x'; 1_000_000]);
        let (text, cut) = b.finish();
        assert!(cut);
        assert!(text.len() < 200);
        assert!(text.contains("999900 bytes omitted"), "{text}");
    }
}
