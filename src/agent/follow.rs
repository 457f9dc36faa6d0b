//! Reading a followed file line by line, with byte offsets, like `tail -F`.
//!
//! `LineReader` hands out complete lines with the byte range each came from.
//! A line still being written (no newline yet) is held back until its end
//! arrives — or, for a file that was rotated away, given out as it is once
//! the file is finished. A line longer than the message limit is kept only up
//! to the limit (the entry is marked truncated); the rest is skipped as it is
//! read, so memory stays bounded whatever the line length.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::line::MAX_MESSAGE_BYTES;

const READ_CHUNK: usize = 256 * 1024;

/// One line and the bytes it spans in the file (newline included).
#[derive(Debug)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub start: u64,
    pub end: u64,
}

pub struct LineReader {
    file: File,
    buf: Vec<u8>,
    pos: usize,
    /// Offset of `buf[pos]` in the file.
    offset: u64,
    /// The line being assembled (at most the message limit + a little).
    line: Vec<u8>,
    line_start: u64,
}

impl LineReader {
    /// Reads `file` from byte `at`.
    pub fn new(mut file: File, at: u64) -> std::io::Result<LineReader> {
        file.seek(SeekFrom::Start(at))?;
        Ok(LineReader {
            file,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            offset: at,
            line: Vec::new(),
            line_start: at,
        })
    }

    /// Where the next line starts: every byte before it was handed out.
    pub fn consumed(&self) -> u64 {
        self.line_start
    }

    /// Bytes of an unfinished line held back.
    pub fn has_partial(&self) -> bool {
        self.offset > self.line_start
    }

    /// The next complete line ending at or before `limit` (if given);
    /// `None` at the end of what is written so far.
    pub fn next_line(&mut self, limit: Option<u64>) -> std::io::Result<Option<Line>> {
        loop {
            if self.pos == self.buf.len() {
                if limit.is_some_and(|l| self.offset >= l) {
                    return Ok(None);
                }
                self.buf.clear();
                self.pos = 0;
                let want = match limit {
                    Some(l) => (l - self.offset).min(READ_CHUNK as u64) as usize,
                    None => READ_CHUNK,
                };
                self.buf.resize(want, 0);
                let n = self.file.read(&mut self.buf)?;
                self.buf.truncate(n);
                if n == 0 {
                    return Ok(None);
                }
            }
            let rest = &self.buf[self.pos..];
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    keep(&mut self.line, &rest[..=i]);
                    self.pos += i + 1;
                    self.offset += (i + 1) as u64;
                    return Ok(Some(self.take_line()));
                }
                None => {
                    let n = rest.len();
                    keep(&mut self.line, rest);
                    self.pos += n;
                    self.offset += n as u64;
                }
            }
        }
    }

    /// The unfinished line held back, as a line of its own: for a file
    /// that will never grow again (rotated away).
    pub fn finish(&mut self) -> Option<Line> {
        self.has_partial().then(|| self.take_line())
    }

    fn take_line(&mut self) -> Line {
        let line = Line {
            bytes: std::mem::take(&mut self.line),
            start: self.line_start,
            end: self.offset,
        };
        self.line_start = self.offset;
        line
    }
}

/// Appends to the line being assembled, up to the message limit (+ a few
/// bytes, so the entry knows it was cut).
fn keep(line: &mut Vec<u8>, bytes: &[u8]) {
    let room = (MAX_MESSAGE_BYTES + 8).saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_arrive_in_pieces_and_keep_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let mut w = std::fs::File::create(&path).unwrap();
        w.write_all(b"one\ntw").unwrap();
        let mut r = LineReader::new(File::open(&path).unwrap(), 0).unwrap();
        let l = r.next_line(None).unwrap().unwrap();
        assert_eq!((&l.bytes[..], l.start, l.end), (&b"one\n"[..], 0, 4));
        assert!(r.next_line(None).unwrap().is_none());
        assert!(r.has_partial());
        assert_eq!(r.consumed(), 4);
        w.write_all(b"o\nthree").unwrap();
        let l = r.next_line(None).unwrap().unwrap();
        assert_eq!((&l.bytes[..], l.start, l.end), (&b"two\n"[..], 4, 8));
        assert!(r.next_line(None).unwrap().is_none());
        let l = r.finish().unwrap();
        assert_eq!((&l.bytes[..], l.start, l.end), (&b"three"[..], 8, 13));
        assert!(r.finish().is_none());
    }

    #[test]
    fn a_limit_stops_at_a_line_end_and_a_huge_line_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let mut content = b"a\nb\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', 3 * READ_CHUNK));
        content.extend_from_slice(b"\nc\n");
        std::fs::write(&path, &content).unwrap();
        let mut r = LineReader::new(File::open(&path).unwrap(), 0).unwrap();
        assert_eq!(r.next_line(Some(2)).unwrap().unwrap().end, 2);
        assert!(r.next_line(Some(2)).unwrap().is_none());
        assert_eq!(r.next_line(None).unwrap().unwrap().end, 4);
        let huge = r.next_line(None).unwrap().unwrap();
        assert!(huge.bytes.len() <= MAX_MESSAGE_BYTES + 8);
        assert_eq!(huge.end, 4 + 3 * READ_CHUNK as u64 + 1);
        assert_eq!(&r.next_line(None).unwrap().unwrap().bytes[..], b"c\n");
    }
}
