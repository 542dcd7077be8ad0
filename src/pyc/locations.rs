//! Column positions in CPython 3.11+ location tables (`co_linetable`), moved with the
//! text a relocation replaced on their source line.
//!
//! From 3.11 on, every instruction records its source span: lines and UTF-8 byte
//! columns. Replacing the prefix in a source line moves every column after it by the
//! difference in length, so the relocated bytecode keeps its tracebacks' carets where
//! they belong and does not depend on the length of the path it was compiled at. The
//! table is decoded into spans ([`decode`]), each column is moved ([`Shifts`]), and the
//! spans are encoded again as CPython's compiler encodes them ([`encode`]): the format
//! is CPython's `Objects/locations.md`.

use std::collections::HashMap;

use memchr::memmem;

/// Where one range of instructions comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Span {
    /// No location.
    None,
    /// Lines and columns (a column is `None` where CPython records none).
    At {
        line: i64,
        end_line: i64,
        col: Option<u64>,
        end_col: Option<u64>,
    },
}

/// One entry of a table: how many code units, and their span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    units: u8,
    span: Span,
}

const NONE: u8 = 15;
const LONG: u8 = 14;
const NO_COLUMNS: u8 = 13;
const ONE_LINE: u8 = 10;

/// Reads a location table of a code object whose first line is `first_line`; `None`
/// if it is not one.
pub(super) fn decode(table: &[u8], first_line: i64) -> Option<Vec<Entry>> {
    let mut bytes = table.iter().copied();
    let mut entries = Vec::new();
    let mut line = first_line;
    while let Some(head) = bytes.next() {
        if head & 0x80 == 0 {
            return None;
        }
        let (code, units) = ((head >> 3) & 15, (head & 7) + 1);
        let span = match code {
            NONE => Span::None,
            LONG => {
                line += signed_varint(&mut bytes)?;
                let end_line = line + i64::try_from(varint(&mut bytes)?).ok()?;
                let col = varint(&mut bytes)?.checked_sub(1);
                let end_col = varint(&mut bytes)?.checked_sub(1);
                Span::At {
                    line,
                    end_line,
                    col,
                    end_col,
                }
            }
            NO_COLUMNS => {
                line += signed_varint(&mut bytes)?;
                Span::At {
                    line,
                    end_line: line,
                    col: None,
                    end_col: None,
                }
            }
            ONE_LINE..=12 => {
                line += i64::from(code - ONE_LINE);
                let (col, end_col) = (bytes.next()?, bytes.next()?);
                on_line(line, u64::from(col), u64::from(end_col))
            }
            _ => {
                let second = bytes.next()?;
                let col = u64::from(code) * 8 + u64::from((second >> 4) & 7);
                on_line(line, col, col + u64::from(second & 15))
            }
        };
        entries.push(Entry { units, span });
    }
    Some(entries)
}

fn on_line(line: i64, col: u64, end_col: u64) -> Span {
    Span::At {
        line,
        end_line: line,
        col: Some(col),
        end_col: Some(end_col),
    }
}

/// Writes `entries` as CPython's compiler does (the shortest form that holds each).
pub(super) fn encode(entries: &[Entry], first_line: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line = first_line;
    for entry in entries {
        let head = |code: u8| 0x80 | (code << 3) | (entry.units - 1);
        let Span::At {
            line: at,
            end_line,
            col,
            end_col,
        } = entry.span
        else {
            out.push(head(NONE));
            continue;
        };
        let delta = at - line;
        match (col, end_col) {
            (Some(c), Some(e))
                if end_line == at && delta == 0 && c < 80 && e >= c && e - c < 16 =>
            {
                out.push(head((c / 8) as u8));
                out.push((((c % 8) as u8) << 4) | (e - c) as u8);
                continue;
            }
            (Some(c), Some(e))
                if end_line == at && (0..3).contains(&delta) && c < 128 && e < 128 =>
            {
                out.extend([head(ONE_LINE + delta as u8), c as u8, e as u8]);
            }
            (None, _) | (_, None) if end_line == at => {
                out.push(head(NO_COLUMNS));
                put_signed_varint(&mut out, delta);
            }
            _ => {
                out.push(head(LONG));
                put_signed_varint(&mut out, delta);
                put_varint(&mut out, (end_line - at).unsigned_abs());
                put_varint(&mut out, col.map_or(0, |c| c + 1));
                put_varint(&mut out, end_col.map_or(0, |c| c + 1));
            }
        }
        line = at;
    }
    out
}

fn varint(bytes: &mut impl Iterator<Item = u8>) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(6) {
        let b = bytes.next()?;
        value |= u64::from(b & 63) << shift;
        if b & 64 == 0 {
            return Some(value);
        }
    }
    None
}

fn signed_varint(bytes: &mut impl Iterator<Item = u8>) -> Option<i64> {
    let raw = varint(bytes)?;
    let magnitude = i64::try_from(raw >> 1).ok()?;
    Some(if raw & 1 == 1 { -magnitude } else { magnitude })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 64 {
        out.push(64 | (value & 63) as u8);
        value >>= 6;
    }
    out.push(value as u8);
}

fn put_signed_varint(out: &mut Vec<u8>, value: i64) {
    let raw = if value < 0 {
        (value.unsigned_abs() << 1) | 1
    } else {
        value.unsigned_abs() << 1
    };
    put_varint(out, raw);
}

/// How far each column of a source moves when every `from` in it becomes `to`: per
/// line (1-based), the columns where a replaced `from` ends.
pub(super) struct Shifts {
    ends: HashMap<i64, Vec<u64>>,
    delta: i64,
}

impl Shifts {
    /// The shifts of relocating `source` from `from` to `to`; `None` if nothing moves.
    pub(super) fn new(source: &[u8], from: &[u8], to: &[u8]) -> Option<Shifts> {
        if from.is_empty() || from.len() == to.len() {
            return None;
        }
        let starts: Vec<usize> = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', source).map(|i| i + 1))
            .collect();
        let mut ends: HashMap<i64, Vec<u64>> = HashMap::new();
        for at in memmem::find_iter(source, from) {
            let index = starts.partition_point(|&s| s <= at) - 1;
            let column = (at - starts[index] + from.len()) as u64;
            ends.entry(index as i64 + 1).or_default().push(column);
        }
        let delta = to.len() as i64 - from.len() as i64;
        (!ends.is_empty()).then_some(Shifts { ends, delta })
    }

    /// Shifts that move nothing, yet make tables be decoded and encoded again.
    #[cfg(test)]
    pub(super) fn none() -> Shifts {
        Shifts {
            ends: HashMap::new(),
            delta: 1,
        }
    }

    /// Column `col` of `line`, moved past every replacement that ends before it.
    fn column(&self, line: i64, col: u64) -> u64 {
        let before = self
            .ends
            .get(&line)
            .map_or(0, |ends| ends.iter().filter(|&&e| e <= col).count());
        col.saturating_add_signed(self.delta * before as i64)
    }

    /// `entries` with every column moved.
    pub(super) fn apply(&self, entries: &mut [Entry]) {
        for entry in entries {
            if let Span::At {
                line,
                end_line,
                col,
                end_col,
            } = &mut entry.span
            {
                *col = col.map(|c| self.column(*line, c));
                *end_col = end_col.map(|c| self.column(*end_line, c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads_back_as_written() {
        let entries = [
            Entry {
                units: 1,
                span: Span::None,
            },
            Entry {
                units: 2,
                span: on_line(3, 4, 10),
            },
            Entry {
                units: 8,
                span: on_line(5, 100, 120),
            },
            Entry {
                units: 3,
                span: on_line(2, 300, 310),
            },
            Entry {
                units: 1,
                span: Span::At {
                    line: 9,
                    end_line: 9,
                    col: None,
                    end_col: None,
                },
            },
            Entry {
                units: 4,
                span: Span::At {
                    line: 9,
                    end_line: 12,
                    col: Some(7),
                    end_col: None,
                },
            },
        ];
        let table = encode(&entries, 3);
        assert_eq!(decode(&table, 3).unwrap(), entries);
    }

    #[test]
    fn columns_move_past_the_replacements_before_them() {
        let source = b"x = '/p' + '/p'\ny = 1\nz = '/p'\n";
        let shifts = Shifts::new(source, b"/p", b"/long").unwrap();
        assert_eq!(shifts.column(1, 4), 4);
        assert_eq!(shifts.column(1, 8), 11);
        assert_eq!(shifts.column(1, 15), 21);
        assert_eq!(shifts.column(2, 5), 5);
        assert_eq!(shifts.column(3, 8), 11);
        assert!(Shifts::new(source, b"/p", b"/q").is_none());
    }
}
